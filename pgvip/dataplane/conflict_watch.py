"""Address conflicts: another host answering for a VIP this node holds, seen on the wire.

While a VIP is held, every ARP packet (IPv4) and Neighbour Advertisement (IPv6) on the
interface is read; one that claims the VIP (ARP sender address, NA target) with another MAC
than this interface's is a conflict: a host outside the cluster configured with the address,
or a second pgvip that believes it is master. As it claims an IPv4 VIP, pgvip also sends an
RFC 5227 ARP probe (sender address 0.0.0.0), so that a host that already had the address
answers at once instead of at its next ARP. The claim itself is not delayed by the probe: a
failover must not wait a probe's 1-2 s, so a conflict is reported, not prevented.

A conflict is reported (log, `/status`, the metric `pgvip_vip_conflicts`), never fought:
pgvip sends no extra announcements in reply, so two hosts never outshout each other in a
GARP war; its own burst and refresh go on at their configured pace. But once the other host
is gone, clients that followed its announcements would keep its MAC until their ARP entry
expires (27 s in the fault matrix). So while a conflict lasts on a held IPv4 VIP, the holder
sends an ARP probe every 2 × `recheck` seconds (a probe updates nobody's cache); when one
gets no answer from another MAC, and no claim came since, the conflict is over and the
claimer's `on_cleared` re-announces the VIP (at most RECLAIMS_PER_MINUTE times a minute).
The parsing and the decision are pure (`parse_arp`, `parse_na`, `ConflictDetector`);
`ConflictWatch` does the I/O.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pgvip.dataplane.announce import (
    ARPHRD_ETHER,
    ARPOP_REQUEST,
    BROADCAST_MAC,
    ETH_MIN_FRAME,
    ETH_P_ARP,
    ETH_P_IP,
    ICMPV6_NEIGHBOR_ADVERT,
    ND_OPT_TARGET_LL_ADDR,
    interface_mac,
)

__all__ = [
    "Claim",
    "Conflict",
    "ConflictDetector",
    "ConflictWatch",
    "build_arp_probe",
    "mac_text",
    "parse_arp",
    "parse_na",
]

IPAddress = IPv4Address | IPv6Address
ARPOP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")
ICMP6_FILTER = 1  # <netinet/icmp6.h>: a raw ICMPv6 socket's type filter
REPORT_EVERY = 60.0  # the same conflict (VIP, MAC) is logged again at most this often
RECHECK = 1.0  # while a conflict lasts: wait, probe, wait this long for an answer
RECLAIMS_PER_MINUTE = 3  # re-announcements after a conflict, per VIP per REPORT_EVERY
# (VIP, MAC) pairs remembered at most: a spoofer cycling through source MACs must not grow
# the daemon's memory for as long as we hold the VIP; the least recent pair is forgotten.
MAX_TRACKED = 64


@dataclass(frozen=True)
class Claim:
    """A packet on the wire that says `mac` has `ip`."""

    ip: IPAddress
    mac: bytes
    kind: str  # "arp reply", "arp request" (an announcement or a query from that address), "na"


@dataclass(frozen=True)
class Conflict:
    """Another MAC claimed a VIP we hold."""

    ip: IPAddress
    mac: bytes
    kind: str
    at: float  # monotonic
    count: int  # claims from this MAC for this VIP while we held it
    new: bool  # first report (or first in REPORT_EVERY): log it

    def describe(self) -> str:
        return f"{mac_text(self.mac)} claims {self.ip} ({self.kind})"


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def parse_arp(packet: bytes) -> Claim | None:
    """An Ethernet/IPv4 ARP packet (no Ethernet header, as an AF_PACKET SOCK_DGRAM socket
    reads it) as a claim of its sender address; None for probes (sender 0.0.0.0), other
    hardware or protocols, and anything truncated."""
    if len(packet) < _ARP.size:
        return None
    hrd, pro, hln, pln, op, sha, spa, _tha, _tpa = _ARP.unpack_from(packet)
    if (hrd, pro, hln, pln) != (ARPHRD_ETHER, ETH_P_IP, 6, 4) or op not in (1, 2):
        return None
    sender = IPv4Address(spa)
    if sender.is_unspecified:
        return None  # a probe: that host asks, it claims nothing (yet)
    return Claim(sender, bytes(sha), "arp reply" if op == ARPOP_REPLY else "arp request")


def parse_na(message: bytes) -> Claim | None:
    """An ICMPv6 Neighbour Advertisement (as a raw ICMPv6 socket reads it) as a claim of its
    target, with the MAC of its target link-layer address option; None without that option
    (the sender's MAC is not in the message) or for anything else."""
    if len(message) < 24 or message[0] != ICMPV6_NEIGHBOR_ADVERT or message[1] != 0:
        return None
    target = IPv6Address(message[8:24])
    offset = 24
    while offset + 2 <= len(message):
        kind, units = message[offset], message[offset + 1]
        if units == 0:
            return None  # malformed: a zero-length option would loop forever
        if kind == ND_OPT_TARGET_LL_ADDR and units == 1 and offset + 8 <= len(message):
            return Claim(target, bytes(message[offset + 2 : offset + 8]), "na")
        offset += units * 8
    return None


def build_arp_probe(mac: bytes, address: IPv4Address) -> bytes:
    """An RFC 5227 ARP probe for `address`: a broadcast request with sender address 0.0.0.0,
    which a host that has the address answers and which changes nobody's ARP cache."""
    if len(mac) != 6:
        raise ValueError(f"an Ethernet address is 6 bytes, got {len(mac)}")
    ethernet = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = _ARP.pack(ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REQUEST, mac, b"\0" * 4, b"\0" * 6,
                    address.packed)  # fmt: skip
    return (ethernet + arp).ljust(ETH_MIN_FRAME, b"\0")


class ConflictDetector:
    """Which VIPs we hold, and whether a claim seen on the wire contradicts that.

    `hold`/`release` follow the VIP; `observe(claim, now)` returns a Conflict for a claim of
    a held VIP from another MAC than ours. `active(now)` lists the conflicts seen within
    `quiet` seconds, for the status API; a release forgets the VIP's conflicts. At most
    MAX_TRACKED (VIP, MAC) pairs are remembered (the least recently seen goes first)."""

    def __init__(self, own_macs: set[bytes], *, quiet: float = REPORT_EVERY) -> None:
        self.own_macs = set(own_macs)
        self.quiet = quiet
        self._held: set[IPAddress] = set()
        self._seen: dict[tuple[IPAddress, bytes], Conflict] = {}
        self._reported: dict[tuple[IPAddress, bytes], float] = {}
        self.total = 0

    def hold(self, ip: IPAddress) -> None:
        self._held.add(ip)

    def release(self, ip: IPAddress) -> None:
        self._held.discard(ip)
        for key in [k for k in self._seen if k[0] == ip]:
            del self._seen[key]
            self._reported.pop(key, None)

    @property
    def held(self) -> frozenset[IPAddress]:
        return frozenset(self._held)

    def observe(self, claim: Claim, now: float) -> Conflict | None:
        if claim.ip not in self._held or claim.mac in self.own_macs:
            return None
        key = (claim.ip, claim.mac)
        last = self._reported.get(key)
        new = last is None or now - last >= self.quiet
        if new:
            self._reported[key] = now
        previous = self._seen.pop(key, None)  # re-inserted last: the dict is oldest first
        count = (previous.count if previous else 0) + 1
        conflict = Conflict(claim.ip, claim.mac, claim.kind, now, count, new)
        self._seen[key] = conflict
        while len(self._seen) > MAX_TRACKED:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            self._reported.pop(oldest, None)
        self.total += 1
        return conflict

    def active(self, now: float) -> list[Conflict]:
        return [c for c in self._seen.values() if now - c.at < self.quiet]

    def last_claim(self, ip: IPAddress) -> float | None:
        """When another MAC last claimed `ip` while we held it (None: never this hold)."""
        return max((c.at for (i, _), c in self._seen.items() if i == ip), default=None)


class ConflictWatch:
    """Reads ARP and Neighbour Advertisements on `ifname` while any VIP is held, and calls
    `on_conflict` for each conflicting claim (`ConflictDetector`). `claimed(ip)` as a VIP is
    added (an IPv4 VIP also gets an ARP probe), `released(ip)` as it is removed."""

    def __init__(
        self,
        ifname: str,
        on_conflict: Callable[[Conflict], None],
        *,
        log: Any,
        clock: Callable[[], float],
        recheck: float = RECHECK,
    ) -> None:
        self.ifname = ifname
        self._on_conflict = on_conflict
        self._log = log
        self._clock = clock
        self.recheck = recheck
        self.detector = ConflictDetector(set())
        self._sockets: list[socket.socket] = []
        self.error: str | None = None  # why the watch does not run (then conflicts go unseen)
        self._on_cleared: dict[IPAddress, Callable[[], None]] = {}
        self._rechecks: dict[IPAddress, asyncio.Task[None]] = {}
        self._reclaimed: dict[IPAddress, list[float]] = {}

    def claimed(self, ip: IPAddress, on_cleared: Callable[[], None] | None = None) -> None:
        """We add `ip` now; `on_cleared` (re-announce it) runs when a conflict on it is over."""
        self.detector.hold(ip)
        if on_cleared is not None:
            self._on_cleared[ip] = on_cleared
        if not self._sockets:
            self._open()
        if isinstance(ip, IPv4Address) and self._sockets:
            self._probe(ip)

    def released(self, ip: IPAddress) -> None:
        self.detector.release(ip)
        self._on_cleared.pop(ip, None)
        task = self._rechecks.pop(ip, None)
        if task is not None:
            task.cancel()
        if not self.detector.held:
            self.close()

    def _recheck_soon(self, ip: IPAddress) -> None:
        if isinstance(ip, IPv4Address) and ip in self._on_cleared and ip not in self._rechecks:
            task = asyncio.get_running_loop().create_task(self._until_clear(ip))
            self._rechecks[ip] = task
            task.add_done_callback(lambda _t: self._rechecks.pop(ip, None))

    async def _until_clear(self, ip: IPv4Address) -> None:
        """Probe `ip` while another host answers for it; re-announce once nobody does."""
        while ip in self.detector.held:
            await asyncio.sleep(self.recheck)
            asked = self._clock()
            self._probe(ip)
            await asyncio.sleep(self.recheck)
            last = self.detector.last_claim(ip)
            if last is not None and last >= asked:
                continue  # it still answers: still a conflict
            recent = [t for t in self._reclaimed.get(ip, []) if asked - t < REPORT_EVERY]
            if len(recent) >= RECLAIMS_PER_MINUTE:
                continue  # a stranger that comes and goes: a few bursts a minute, no more
            callback = self._on_cleared.get(ip)
            if callback is None:
                return
            self._reclaimed[ip] = [*recent, asked]
            self._log.info("VIP conflict over: no other host answers for the VIP now; "
                           "announcing it again", vip=str(ip))  # fmt: skip
            callback()
            return

    def close(self) -> None:
        for task in self._rechecks.values():
            task.cancel()
        self._rechecks.clear()
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []

    def _open(self) -> None:
        loop = asyncio.get_running_loop()
        opened: list[socket.socket] = []
        try:
            arp = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ARP))
            opened.append(arp)
            arp.bind((self.ifname, ETH_P_ARP))
            self.detector.own_macs = {interface_mac(arp, self.ifname)}
            na = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            opened.append(na)
            na.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            # Pass Neighbour Advertisements only: ICMP6_FILTER's bit set means "block".
            blocked = [0xFFFFFFFF] * 8
            blocked[ICMPV6_NEIGHBOR_ADVERT >> 5] &= ~(1 << (ICMPV6_NEIGHBOR_ADVERT & 31))
            na.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
        except (OSError, RuntimeError) as exc:
            for sock in opened:
                sock.close()
            self.error = f"address conflict watch on {self.ifname} not running: {exc}"
            self._log.warning("VIP conflict watch unavailable", error=self.error)
            return
        self.error = None
        for sock, parse in ((arp, parse_arp), (na, parse_na)):
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable, sock, parse)
            self._sockets.append(sock)

    def _probe(self, ip: IPv4Address) -> None:
        mac = next(iter(self.detector.own_macs), None)
        if mac is None:
            return
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
                sock.sendto(build_arp_probe(mac, ip), (self.ifname, ETH_P_ARP))
        except OSError as exc:
            self._log.warning("ARP probe failed", vip=str(ip), error=str(exc))

    def _readable(self, sock: socket.socket, parse: Callable[[bytes], Claim | None]) -> None:
        for _ in range(64):  # a flood must not starve the loop
            try:
                packet = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._log.warning("VIP conflict watch read failed", error=str(exc))
                return
            claim = parse(packet)
            if claim is None:
                continue
            conflict = self.detector.observe(claim, self._clock())
            if conflict is not None:
                self._on_conflict(conflict)
                self._recheck_soon(conflict.ip)
