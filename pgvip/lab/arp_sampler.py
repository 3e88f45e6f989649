"""Watch which MAC answers ARP for each VIP, from the client namespace: what a client's ARP
cache would learn, beside the address-level `VipSampler`.

Every `interval` (20 ms) one worker thread, inside the client namespace, broadcasts an ARP
request (who-has VIP) per VIP from an AF_PACKET socket and collects the replies. A node whose
kernel has the VIP answers, whatever pgvip thinks; so does a host outside the cluster that has
it (a keepalived, a rogue pgvip, an address added by hand). A slot where two MACs answer for
one VIP is a dual-holder sample at the ARP level.

The client's own ARP cache must not learn from these replies (a reply updates any entry it
names, so the sampler would heal a stale entry that a real client keeps): the requests come
from a MAC of their own (`OBSERVER_MAC`), the replies go to it, and the client's kernel drops
them as frames for another host; the socket reads them in promiscuous mode.

A reply carries no request id, and one that arrives late (a busy node) must not count in the
next slot, where a new holder may answer too. So each slot asks from another sender address,
one of `TAGS` unused addresses of the lab's subnet (.240 up), and a reply is credited to the
slot whose address it is sent to. A slot is closed `GRACE` slots after its request.
The frame parsing and the slot book-keeping are pure (`build_request`, `parse_reply`,
`SlotBook`); `ArpSampler` does the I/O.
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pgvip.lab.layout import LabLayout

ETH_P_ARP = 0x0806
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
BROADCAST = b"\xff" * 6
TAGS = 8  # sender addresses .240 to .247 take turns
TAG_BASE_HOST = 240
GRACE = 5  # a slot stays open for replies this many slots after its request
OBSERVER_MAC = bytes.fromhex("027067760001")  # locally administered; no lab host has it
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1


class ArpSamplerError(RuntimeError):
    """The ARP sampler cannot run (no client namespace, no socket)."""


def build_request(
    mac: bytes, sender: ipaddress.IPv4Address, target: ipaddress.IPv4Address
) -> bytes:
    """A broadcast ARP request: who has `target`? tell `sender` (at `mac`)."""
    eth = BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        ARPOP_REQUEST,
        mac,
        sender.packed,
        b"\x00" * 6,
        target.packed,
    )
    return (eth + arp).ljust(60, b"\x00")


@dataclass(frozen=True)
class Reply:
    """`mac` says it has `ip`, answering a request from `to`."""

    mac: str
    ip: ipaddress.IPv4Address
    to: ipaddress.IPv4Address


def parse_reply(frame: bytes) -> Reply | None:
    """An Ethernet ARP reply as a Reply; None for anything else (requests, GARPs, junk)."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, ARPOP_REPLY):
        return None
    sha, spa, _tha, tpa = struct.unpack_from("!6s4s6s4s", frame, 22)
    return Reply(sha.hex(":"), ipaddress.IPv4Address(spa), ipaddress.IPv4Address(tpa))


@dataclass(frozen=True)
class ArpSample:
    """The slot asked at monotonic time `t`: per VIP, the hosts (or MACs) that answered."""

    t: float
    answers: Mapping[ipaddress.IPv4Address, tuple[str, ...]]


class SlotBook:
    """Open slots by sender tag; `close_due(n)` closes those asked `GRACE` slots before slot n."""

    def __init__(self, vips: Iterable[ipaddress.IPv4Address], names: Mapping[str, str]) -> None:
        self.vips = tuple(vips)
        self.names = dict(names)
        self._open: dict[int, tuple[int, float, dict[ipaddress.IPv4Address, set[str]]]] = {}
        self.stray = 0  # replies to a tag with no open slot (later than GRACE)

    def ask(self, slot: int, t: float) -> int:
        """Open slot `slot` (asked at `t`); returns its tag."""
        tag = slot % TAGS
        self._open[tag] = (slot, t, {vip: set() for vip in self.vips})
        return tag

    def answer(self, tag: int, reply: Reply) -> None:
        entry = self._open.get(tag)
        if entry is None or reply.ip not in entry[2]:
            self.stray += 1
            return
        entry[2][reply.ip].add(self.names.get(reply.mac, reply.mac))

    def close_due(self, slot: int, *, grace: int = GRACE) -> list[ArpSample]:
        """Close every slot asked `grace` or more slots before `slot`, oldest first."""
        due = sorted((s, tag) for tag, (s, _t, _a) in self._open.items() if s <= slot - grace)
        out = []
        for _s, tag in due:
            _slot, t, answers = self._open.pop(tag)
            out.append(ArpSample(t, {ip: tuple(sorted(h)) for ip, h in answers.items()}))
        return out


def host_macs(layout: LabLayout) -> dict[str, str]:
    """MAC of eth0 -> host name, for every host of the lab (nodes, etcd, client)."""
    out: dict[str, str] = {}
    for host in [*layout.node_names(), "etcd", "client"]:
        proc = subprocess.run(
            ["ip", "-n", layout.namespace(host), "-j", "link", "show", "eth0"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if proc.returncode == 0:
            for link in json.loads(proc.stdout or "[]"):
                if link.get("address"):
                    out[str(link["address"])] = host
    return out


class ArpSampler:
    """Asks who-has for each VIP every `interval` from the client namespace (a thread).

    `start()` opens the socket (errors raise there), `stop()` ends sampling; `samples` then
    holds every closed slot in time order. Use as a context manager.
    """

    def __init__(
        self,
        layout: LabLayout,
        *,
        vips: Iterable[str | ipaddress.IPv4Address] | None = None,
        interval: float = 0.02,
        interface: str = "eth0",
    ) -> None:
        self.layout = layout
        self.vips = tuple(
            ipaddress.IPv4Address(str(v)) for v in (vips or (layout.rw_vip, layout.ro_vip))
        )
        self.interval = interval
        self.interface = interface
        self.samples: list[ArpSample] = []
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        names = host_macs(self.layout)
        self._thread = threading.Thread(
            target=self._run, args=(names,), daemon=True, name=f"arp-sampler-{self.layout.prefix}"
        )
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._open_error is not None:
            raise ArpSamplerError(f"ARP sampler: {self._open_error}") from self._open_error

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ArpSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[ArpSample]:
        with self._lock:
            return list(self.samples)

    def _open(self) -> tuple[socket.socket, bytes]:
        from pgvip.lab import netns

        netns.enter_netns(self.layout.client_ns)  # this thread only, for good
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            sock.bind((self.interface, ETH_P_ARP))
            sock.setblocking(False)
            # Promiscuous while the socket is open: the replies are for OBSERVER_MAC.
            mreq = struct.pack("iHH8s", socket.if_nametoindex(self.interface),
                               PACKET_MR_PROMISC, 0, b"")  # fmt: skip
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            return sock, OBSERVER_MAC
        except BaseException:
            sock.close()
            raise

    def _run(self, names: dict[str, str]) -> None:
        try:
            sock, mac = self._open()
        except BaseException as exc:  # reported by start(), never lost in the thread
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        book = SlotBook(self.vips, names)
        base = self.layout.subnet.network_address + TAG_BASE_HOST
        tags = {base + i: i for i in range(TAGS)}
        slot = 0
        try:
            next_due = time.monotonic()
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_due:
                    tag = book.ask(slot, now)
                    for vip in self.vips:
                        try:
                            sock.send(build_request(mac, base + tag, vip))
                        except OSError as exc:  # ENETDOWN while a fault holds: count, go on
                            self.errors += 1
                            self.last_error = str(exc)
                    closed = book.close_due(slot)
                    if closed:
                        with self._lock:
                            self.samples.extend(closed)
                    slot += 1
                    next_due = max(next_due + self.interval, now)
                ready, _, _ = select.select([sock], [], [], max(0.0, next_due - time.monotonic()))
                if not ready:
                    continue
                while True:
                    try:
                        frame = sock.recv(2048)
                    except BlockingIOError:
                        break
                    reply = parse_reply(frame)
                    if reply is not None and reply.to in tags:
                        book.answer(tags[reply.to], reply)
        finally:
            sock.close()
            with self._lock:
                self.samples.extend(book.close_due(slot + GRACE))


def count_in(
    samples: Iterable[ArpSample], vip: ipaddress.IPv4Address | str, since: float, until: float
) -> tuple[int, int, int, int]:
    """(samples, dual-holder samples, unanswered samples, most answering hosts) for `vip`
    among the samples asked in [since, until)."""
    ip = ipaddress.IPv4Address(str(vip))
    total = dual = unanswered = most = 0
    for s in samples:
        if not since <= s.t < until:
            continue
        hosts = s.answers.get(ip, ())
        total += 1
        dual += len(hosts) > 1
        unanswered += not hosts
        most = max(most, len(hosts))
    return total, dual, unanswered, most
