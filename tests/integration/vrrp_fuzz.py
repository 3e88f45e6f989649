"""Hostile VRRP traffic for the daemon tests: a seeded generator of fuzzed and mutated IPv4
VRRP packets, a paced raw-socket sender (IP_HDRINCL, so TTL and source are ours to spoof),
an observer that timestamps one router's adverts, and readers for the daemon's counters.

Every generated packet carries the drop reason the daemon must count for it. The oracle is
the daemon's own pipeline (pgvip.vrrp.packet plus the channel's VRID and address checks),
re-run here on the exact bytes sent; what the test checks is that the running daemon
counts each one, changes nothing, and keeps advertising. Packets the daemon would accept
for its own VRID are never sent by the flood (the generator draws again).
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from pgvip.vrrp.packet import (
    IPPROTO_VRRP,
    VRRP_MCAST_V4,
    Advert,
    VrrpPacketError,
    decode,
    encode,
    parse_ipv4_datagram,
)

VALID = "valid"
# Sources the flood spoofs: in the lab subnet (but never a host that runs pgvip, whose
# kernel would drop its "own" address as martian) and outside it (rp_filter is off).
SPOOFED = tuple(IPv4Address(a) for a in ("192.0.2.77", "192.0.2.200", "198.51.100.7", "10.9.8.7"))
IP_MTU_PAYLOAD = 1480  # the largest payload an IP_HDRINCL send fits in a 1500-byte frame


def ip_header(src: IPv4Address, dst: IPv4Address, ttl: int, payload_len: int) -> bytes:
    """An IPv4 header for IP_HDRINCL (the kernel fills in the id and checksum)."""
    return struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + payload_len, 0, 0, ttl, IPPROTO_VRRP, 0,
        src.packed, dst.packed,
    )  # fmt: skip


def classify(
    datagram: bytes, vrid: int, addresses: frozenset[IPv4Address], own: IPv4Address
) -> str:
    """The reason the daemon (multicast mode, one instance `vrid`) drops this, or VALID."""
    try:
        src, dst, ttl, payload = parse_ipv4_datagram(datagram)
        if src == own:
            return "own"
        advert = decode(payload, src, dst, ttl=ttl)
    except VrrpPacketError as exc:
        return exc.reason
    if advert.vrid != vrid:
        return "unknown_vrid"
    if advert.priority != 255 and set(advert.addresses) != addresses:
        return "address_mismatch"
    return VALID


@dataclass
class FuzzStream:
    """Mutations of a valid advert for (vrid, vip), plus random bytes; seeded."""

    vrid: int
    vip: IPv4Address
    own: IPv4Address  # the daemon's address: never used as a spoofed source
    seed: int = 1
    priority: int = 254
    rng: random.Random = field(init=False)
    skipped_valid: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._addresses = frozenset([self.vip])

    def advert(self, src: IPv4Address, **fields: int) -> bytes:
        a = Advert(
            vrid=fields.get("vrid", self.vrid),
            priority=fields.get("priority", self.priority),
            max_advert_int=fields.get("interval", 100),
            addresses=(self.vip,),
        )
        return encode(a, src, VRRP_MCAST_V4)

    def _payload(self, src: IPv4Address) -> tuple[bytes, int]:
        """(VRRP payload, TTL): one mutation, chosen at random."""
        r = self.rng
        ttl = 255
        kind = r.randrange(16)
        base = self.advert(src, priority=r.choice((1, 100, 254, 255, 0)))
        if kind == 0:  # random bytes, any length
            return r.randbytes(r.randrange(0, 64)), ttl
        if kind == 1:  # huge: up to a full frame of random bytes
            return r.randbytes(r.randrange(64, IP_MTU_PAYLOAD + 1)), ttl
        if kind == 2:  # truncation
            return base[: r.randrange(0, len(base))], ttl
        if kind == 3:  # extension, up to a full frame
            return base + r.randbytes(r.randrange(1, IP_MTU_PAYLOAD - len(base) + 1)), ttl
        if kind in (4, 5):  # bit flips
            data = bytearray(base)
            for _ in range(r.randrange(1, 9)):
                bit = r.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
            return bytes(data), ttl
        if kind == 6:  # valid but routed: TTL below 255
            return base, r.choice((1, 64, 128, 254))
        if kind == 7:  # wrong checksum
            bad = struct.pack("!H", r.randrange(0x10000))
            return base[:6] + bad + base[8:], ttl
        if kind == 8:  # another VRID, valid otherwise
            return self.advert(
                src, vrid=r.choice([v for v in (1, 49, 51, 255) if v != self.vrid])
            ), ttl
        if kind == 9:  # another address list
            other = IPv4Address(r.randrange(1 << 32))
            a = Advert(self.vrid, r.randrange(1, 255), 100, (other,))
            return encode(a, src, VRRP_MCAST_V4), ttl
        if kind == 10:  # VRRPv2 or another type, checksum right
            head = bytes([r.choice((0x21, 0x31 + r.randrange(1, 15), 0x41, 0x11))])
            return _fix(head + base[1:], src), ttl
        if kind == 11:  # count that disagrees with the length, checksum right
            data = bytearray(base)
            data[3] = r.choice((0, 2, 3, 255))
            return _fix(bytes(data), src), ttl
        if kind == 12:  # VRID 0 or interval 0, checksum right
            data = bytearray(base)
            if r.random() < 0.5:
                data[1] = 0
            else:
                data[4:6] = bytes([r.randrange(16) << 4, 0])
            return _fix(bytes(data), src), ttl
        if kind == 13:  # IPv6-sized addresses in an IPv4 packet
            data = base[:3] + b"\x01" + base[4:8] + r.randbytes(16)
            return _fix(data, src), ttl
        if kind == 14:  # a priority-0 ("resigning") advert with a bad TTL
            return self.advert(src, priority=0), r.choice((0, 1, 254))
        # random header fields over a right-length body, checksum right
        data = r.randbytes(8) + self.vip.packed
        return _fix(data, src), ttl

    def __iter__(self) -> Iterator[tuple[bytes, str]]:
        while True:
            src = self.rng.choice(SPOOFED)
            payload, ttl = self._payload(src)
            datagram = ip_header(src, VRRP_MCAST_V4, ttl, len(payload)) + payload
            reason = classify(datagram, self.vrid, self._addresses, self.own)
            if reason == VALID:
                self.skipped_valid += 1  # it could rightly change the state: not in a flood
                continue
            yield datagram, reason


def _fix(message: bytes, src: IPv4Address) -> bytes:
    """The message with its VRRPv3 checksum made right (other fields as given)."""
    from pgvip.vrrp.packet import checksum

    pseudo = src.packed + VRRP_MCAST_V4.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, len(message))
    zeroed = message[:6] + b"\0\0" + message[8:]
    return zeroed[:6] + struct.pack("!H", checksum(pseudo + zeroed)) + zeroed[8:]


def hdrincl_socket(ifname: str = "eth0") -> socket.socket:
    """A raw socket whose packets carry the IP header we build (call inside the netns)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    return sock


@dataclass
class FloodResult:
    sent: int
    seconds: float
    expected: Counter[str]
    send_errors: int

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def flood(
    stream: Iterator[tuple[bytes, str]],
    count: int,
    rate: float | None,
    stop: threading.Event | None = None,
) -> FloodResult:
    """Send `count` packets from `stream` to 224.0.0.18, paced to `rate` per second (None:
    as fast as this thread can). Runs in the calling thread's namespace."""
    sock = hdrincl_socket()
    expected: Counter[str] = Counter()
    sent = errors = 0
    dst = (str(VRRP_MCAST_V4), 0)
    started = time.monotonic()
    try:
        for datagram, reason in stream:
            if sent >= count or (stop is not None and stop.is_set()):
                break
            try:
                sock.sendto(datagram, dst)
            except (BlockingIOError, OSError):
                errors += 1  # ENOBUFS under load: not sent, so not expected either
                time.sleep(0.0005)
                continue
            sent += 1
            expected[reason] += 1
            if rate and sent % 64 == 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        sock.close()
    return FloodResult(sent, time.monotonic() - started, expected, errors)


def send_once(datagrams: list[bytes]) -> None:
    sock = hdrincl_socket()
    try:
        for datagram in datagrams:
            sock.sendto(datagram, (str(VRRP_MCAST_V4), 0))
    finally:
        sock.close()


class AdvertObserver:
    """Timestamps the valid adverts that `router` sends, from another namespace.

    Open it in a thread that has entered the observer's namespace. The caller should make
    the observer's kernel drop every other VRRP packet first (see `observer_filter`), or a
    flood fills this socket's buffer and adverts are missed.
    """

    def __init__(self, router: IPv4Address) -> None:
        self.router = router
        self.times: list[float] = []
        self.other = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        # ip_mreqn with the interface index: the lab namespaces have no default route.
        mreq = struct.pack("4s4si", VRRP_MCAST_V4.packed, bytes(4), socket.if_nametoindex("eth0"))
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            try:
                src, dst, ttl, payload = parse_ipv4_datagram(data)
                if src != self.router:
                    self.other += 1
                    continue
                decode(payload, src, dst, ttl=ttl)
            except VrrpPacketError:
                self.other += 1
                continue
            self.times.append(now)

    def stop(self) -> None:
        self._stop.set()

    def max_gap(self, since: float, until: float) -> float:
        """The longest silence between `since` and `until` (edges included)."""
        marks = [since, *(t for t in self.times if since <= t <= until), until]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))


def observer_filter(ns: str, router: IPv4Address) -> None:
    """In `ns`, drop every VRRP packet not from `router` before it reaches a socket."""
    rules = (
        "table ip fuzzobs {\n chain in {\n  type filter hook input priority 0;\n"
        f"  ip protocol 112 ip saddr != {router} drop\n }}\n}}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True,
        capture_output=True, timeout=10,
    )  # fmt: skip


def metrics(ns: str, port: int = 8010) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The daemon's /metrics in `ns`, parsed into {(name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/metrics"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rejected(ns: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for (name, labels), value in metrics(ns).items():
        if name == "pgvip_vrrp_packets_rejected_total":
            counts[dict(labels)["reason"]] = int(value)
    return counts


def status(ns: str, port: int = 8010) -> dict:
    import json

    out = subprocess.run(
        ["ip", "netns", "exec", ns, "curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/status"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return json.loads(out)


def raw_drops(ns: str, bound: IPv4Address = VRRP_MCAST_V4) -> int:
    """Packets the kernel dropped at the raw proto-112 socket bound to `bound` in `ns`
    (receive buffer full): the daemon never saw them. /proc/net/raw is per namespace."""
    text = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/net/raw"],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    want = f"{int.from_bytes(bound.packed, 'little'):08X}:0070"
    total = 0
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 12 and cols[1] == want:
            total += int(cols[-1])
    return total


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


__all__ = [
    "SPOOFED",
    "VALID",
    "AdvertObserver",
    "FloodResult",
    "FuzzStream",
    "classify",
    "flood",
    "ip_header",
    "metrics",
    "observer_filter",
    "proc_cpu_seconds",
    "proc_rss_kib",
    "raw_drops",
    "rejected",
    "send_once",
    "status",
]
