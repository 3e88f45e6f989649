"""The pure parts of the VIP conflict watch: ARP and NA parsing, the probe frame, and the
detector's decisions (whose claim is a conflict, and how often it is reported); and, with
the sockets stubbed, the re-announcement once a conflict is over."""

from __future__ import annotations

import asyncio
import struct
import time
from ipaddress import IPv4Address, IPv6Address

from pgvip.dataplane.announce import build_garp_frame, build_unsolicited_na
from pgvip.dataplane.conflict_watch import (
    MAX_TRACKED,
    Claim,
    ConflictDetector,
    ConflictWatch,
    build_arp_probe,
    mac_text,
    parse_arp,
    parse_na,
)

OURS = bytes.fromhex("020000000001")
THEIRS = bytes.fromhex("020000000002")
VIP = IPv4Address("10.0.0.50")
VIP6 = IPv6Address("2001:db8::50")


def arp(op: int, sha: bytes, spa: str, tpa: str = "10.0.0.1", hrd: int = 1) -> bytes:
    return struct.pack("!HHBBH6s4s6s4s", hrd, 0x0800, 6, 4, op, sha,
                       IPv4Address(spa).packed, b"\0" * 6, IPv4Address(tpa).packed)  # fmt: skip


def test_arp_replies_and_requests_claim_their_sender_address() -> None:
    assert parse_arp(arp(2, THEIRS, "10.0.0.50")) == Claim(VIP, THEIRS, "arp reply")
    assert parse_arp(arp(1, THEIRS, "10.0.0.50")) == Claim(VIP, THEIRS, "arp request")
    # A GARP as pgvip sends it, read without its Ethernet header, claims the VIP too.
    assert parse_arp(build_garp_frame(OURS, VIP)[14:]) == Claim(VIP, OURS, "arp request")


def test_probes_other_hardware_and_truncated_packets_claim_nothing() -> None:
    assert parse_arp(arp(1, THEIRS, "0.0.0.0", tpa="10.0.0.50")) is None  # an RFC 5227 probe
    assert parse_arp(arp(2, THEIRS, "10.0.0.50", hrd=6)) is None
    assert parse_arp(arp(3, THEIRS, "10.0.0.50")) is None  # RARP
    assert parse_arp(arp(2, THEIRS, "10.0.0.50")[:20]) is None


def test_the_probe_asks_for_the_vip_from_no_address() -> None:
    frame = build_arp_probe(OURS, VIP)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == OURS and len(frame) == 60
    op, sha, spa, tha, tpa = struct.unpack_from("!6xH6s4s6s4s", frame, 14)
    assert (op, sha, spa, tha, IPv4Address(tpa)) == (1, OURS, b"\0" * 4, b"\0" * 6, VIP)
    assert parse_arp(frame[14:]) is None  # and it claims nothing itself


def test_a_neighbour_advertisement_claims_its_target_with_its_tlla() -> None:
    assert parse_na(build_unsolicited_na(THEIRS, VIP6)) == Claim(VIP6, THEIRS, "na")
    bare = build_unsolicited_na(THEIRS, VIP6)[:24]  # no option: the MAC is unknown
    assert parse_na(bare) is None
    looping = bare + bytes([1, 0]) + b"\0" * 6  # a zero-length option
    assert parse_na(looping) is None
    assert parse_na(b"\x87" + build_unsolicited_na(THEIRS, VIP6)[1:]) is None  # a solicitation


def test_only_another_macs_claim_of_a_held_vip_is_a_conflict() -> None:
    d = ConflictDetector({OURS}, quiet=60.0)
    assert d.observe(Claim(VIP, THEIRS, "arp reply"), 1.0) is None  # not held yet
    d.hold(VIP)
    assert d.observe(Claim(VIP, OURS, "arp request"), 2.0) is None  # our own GARP
    assert d.observe(Claim(IPv4Address("10.0.0.9"), THEIRS, "arp reply"), 2.0) is None
    first = d.observe(Claim(VIP, THEIRS, "arp reply"), 3.0)
    assert first is not None and (first.new, first.count) == (True, 1)
    again = d.observe(Claim(VIP, THEIRS, "arp request"), 10.0)
    assert again is not None and (again.new, again.count, again.kind) == (False, 2, "arp request")
    later = d.observe(Claim(VIP, THEIRS, "arp reply"), 64.0)  # past `quiet`: logged again
    assert later is not None and later.new and later.count == 3
    assert [c.at for c in d.active(70.0)] == [64.0] and d.active(200.0) == []
    assert d.total == 3
    d.release(VIP)
    assert d.active(64.5) == [] and d.observe(Claim(VIP, THEIRS, "na"), 65.0) is None


def test_a_spoofer_cycling_macs_stays_bounded() -> None:
    """Issue 14: one entry per (VIP, MAC) ever seen grew without bound under a flood of
    claims from random source MACs; the least recently seen pair is forgotten instead."""
    d = ConflictDetector({OURS}, quiet=60.0)
    d.hold(VIP)
    for i in range(5000):
        mac = (0x020000000000 + 16 + i).to_bytes(6, "big")
        assert d.observe(Claim(VIP, mac, "arp reply"), 100.0 + i * 0.001) is not None
        if i % 7 == 0:  # a real conflicting host keeps answering all along: it is kept
            again = d.observe(Claim(VIP, THEIRS, "arp reply"), 100.0 + i * 0.001)
            assert again is not None
    assert len(d._seen) <= MAX_TRACKED and len(d._reported) <= MAX_TRACKED
    assert d.total == 5000 + len(range(0, 5000, 7))
    active = d.active(106.0)
    assert len(active) == MAX_TRACKED and THEIRS in {c.mac for c in active}
    assert next(c for c in active if c.mac == THEIRS).count == len(range(0, 5000, 7))


def test_mac_text() -> None:
    assert mac_text(THEIRS) == "02:00:00:00:00:02"


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, event: str, **_kw: object) -> None:
        self.lines.append(event)

    warning = info


class _Sock:
    """What `_readable` reads: the queued packets, then EAGAIN."""

    def __init__(self, packets: list[bytes]) -> None:
        self.packets = packets

    def recv(self, _size: int) -> bytes:
        if not self.packets:
            raise BlockingIOError
        return self.packets.pop(0)


class _Watch(ConflictWatch):
    """No sockets: a probe is answered by the stranger while `present`, as a host that has
    the address answers an RFC 5227 probe."""

    present = True
    probes = 0

    def _open(self) -> None:
        self.detector.own_macs = {OURS}
        self._sockets = [object()]  # type: ignore[list-item]

    def _probe(self, ip: IPv4Address) -> None:
        self.probes += 1
        if self.present:
            self._readable(_Sock([arp(2, THEIRS, str(ip))]), parse_arp)  # type: ignore[arg-type]

    def close(self) -> None:
        self._sockets = []


async def test_a_conflict_that_ends_re_announces_the_vip() -> None:
    seen: list[object] = []
    announced: list[float] = []
    watch = _Watch("eth0", seen.append, log=_Log(), clock=time.monotonic, recheck=0.02)
    watch.claimed(VIP, on_cleared=lambda: announced.append(time.monotonic()))
    assert watch.probes == 1 and len(seen) == 1  # the claim's own probe found the stranger
    await asyncio.sleep(0.2)
    assert announced == [] and watch.probes >= 3  # it still answers: no announcement
    watch.present = False
    gone = time.monotonic()
    await asyncio.sleep(0.2)
    assert len(announced) == 1 and announced[0] - gone < 0.1
    probes = watch.probes
    await asyncio.sleep(0.1)
    assert watch.probes == probes  # done: no probing without a conflict
    # A stranger that comes and goes: each episode ends with a burst, three a minute at most.
    for expected in (2, 3, 3):
        watch.present = True
        watch._readable(_Sock([arp(1, THEIRS, str(VIP), str(VIP))]), parse_arp)  # type: ignore[arg-type]
        watch.present = False
        await asyncio.sleep(0.15)
        assert len(announced) == expected
    assert watch.probes > probes
    watch.released(VIP)
    await asyncio.sleep(0.05)
    assert not watch._rechecks


async def test_no_recheck_without_an_announcer_or_for_ipv6() -> None:
    seen: list[object] = []
    watch = _Watch("eth0", seen.append, log=_Log(), clock=time.monotonic, recheck=0.02)
    watch.claimed(VIP)  # no on_cleared: report only
    watch.claimed(VIP6, on_cleared=lambda: None)  # no ARP probe for IPv6 (no NS/DAD here)
    watch._readable(_Sock([build_unsolicited_na(THEIRS, VIP6)]), parse_na)  # type: ignore[arg-type]
    assert len(seen) == 2 and not watch._rechecks
    watch.released(VIP)
    watch.released(VIP6)
