"""GARP and unsolicited NA on a real bridge: seen by a neighbour, checked by tshark, acted on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest

from pgvip.dataplane.announce import AnnounceError, Announcer, send_garp, send_unsolicited_na
from pgvip.dataplane.privileges import CAP_NET_RAW

from .conftest import (
    FrameCapture,
    NetLab,
    drop_effective_capabilities,
    run_in_netns,
    start_in_netns,
    tshark_fields,
    write_pcap,
)

pytestmark = pytest.mark.integration

VIP4 = IPv4Address("192.0.2.50")
VIP6 = IPv6Address("2001:db8:d9::50")
OLD_MAC = "02:00:00:00:00:99"
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD


def _is_garp_for(vip: IPv4Address) -> Callable[[bytes], bool]:
    return lambda f: f[12:14] == b"\x08\x06" and f[28:32] == vip.packed


def _is_na_for(vip: IPv6Address) -> Callable[[bytes], bool]:
    # Ethernet (14) + IPv6 (40): next header 58, ICMPv6 type 136, target at offset 8.
    return lambda f: f[20] == 58 and f[54] == 136 and f[62:78] == vip.packed


def capture_one(
    netlab: NetLab,
    host: str,
    ethertype: int,
    match: Callable[[bytes], bool],
    send: Callable[[], object],
) -> bytes:
    """Open a listener on `host`, then call send(), and return the first matching frame."""
    capture = run_in_netns(netlab.ns(host), FrameCapture, ethertype)
    try:
        waiting = start_in_netns(netlab.ns(host), capture.wait, match)
        send()
        return waiting.result(10)
    finally:
        capture.close()


def neighbour(netlab: NetLab, host: str, address: str) -> dict[str, str]:
    entries = json.loads(netlab.ip(host, "-j", "neigh", "show", "to", address, "dev", "eth0"))
    return entries[0] if entries else {}


def test_garp_is_an_arp_announcement_and_updates_a_stale_neighbour(
    netlab: NetLab, tmp_path: Path
) -> None:
    netlab.ip("a", "addr", "add", f"{VIP4}/32", "dev", "eth0")
    # b still maps the VIP to the previous holder's MAC, the situation after a failover.
    netlab.ip("b", "neigh", "replace", str(VIP4), "lladdr", OLD_MAC, "dev", "eth0", "nud", "stale")
    netlab.sysctl("b", "net.ipv4.neigh.eth0.locktime", "0")

    frame = capture_one(
        netlab, "b", ETH_P_ARP, _is_garp_for(VIP4),
        lambda: run_in_netns(netlab.ns("a"), send_garp, "eth0", VIP4),
    )  # fmt: skip
    mac_a = bytes.fromhex(netlab.mac("a").replace(":", ""))
    assert frame[0:6] == b"\xff" * 6 and frame[6:12] == mac_a
    assert frame[20:22] == b"\x00\x01"  # request
    assert frame[22:28] == mac_a and frame[28:32] == VIP4.packed  # SHA, SPA
    assert frame[38:42] == VIP4.packed  # TPA == SPA

    pcap = tmp_path / "garp.pcap"
    write_pcap(pcap, [frame])
    assert tshark_fields(
        pcap, "arp.isannouncement", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"
    ) == [["1", str(VIP4), str(VIP4)]]
    entry = neighbour(netlab, "b", str(VIP4))
    assert entry["lladdr"] == netlab.mac("a")


def test_unsolicited_na_overrides_a_stale_neighbour(netlab: NetLab, tmp_path: Path) -> None:
    netlab.ip("a", "addr", "add", f"{VIP6}/128", "dev", "eth0", "nodad")
    netlab.ip("b", "neigh", "replace", str(VIP6), "lladdr", OLD_MAC, "dev", "eth0", "nud", "stale")

    frame = capture_one(
        netlab, "b", ETH_P_IPV6, _is_na_for(VIP6),
        lambda: run_in_netns(netlab.ns("a"), send_unsolicited_na, "eth0", VIP6),
    )  # fmt: skip
    assert frame[21] == 255  # hop limit
    assert frame[22:38] == VIP6.packed  # sent from the VIP itself, like the kernel does
    assert frame[38:54] == IPv6Address("ff02::1").packed
    flags = frame[58]
    assert flags & 0x20 and not flags & 0x40 and not flags & 0x80  # O set, S and R clear
    assert frame[78:80] == b"\x02\x01"  # Target Link-Layer Address option
    assert frame[80:86] == bytes.fromhex(netlab.mac("a").replace(":", ""))

    pcap = tmp_path / "na.pcap"
    write_pcap(pcap, [frame])
    assert tshark_fields(
        pcap, "icmpv6.type", "icmpv6.nd.na.flag.o", "icmpv6.nd.na.flag.s", "icmpv6.checksum.status"
    ) == [["136", "1", "0", "1"]]  # checksum status 1 == good
    # Override: b replaced the old MAC although nothing asked.
    assert neighbour(netlab, "b", str(VIP6))["lladdr"] == netlab.mac("a")


def test_na_before_the_vip_is_assigned_still_goes_out(netlab: NetLab) -> None:
    frame = capture_one(
        netlab, "b", ETH_P_IPV6, _is_na_for(VIP6),
        lambda: run_in_netns(netlab.ns("a"), send_unsolicited_na, "eth0", VIP6),
    )  # fmt: skip
    assert frame[22:38] == netlab.link_local("a").packed  # the kernel chose the source


def test_burst_spacing_seen_by_a_neighbour(netlab: NetLab) -> None:
    netlab.ip("a", "addr", "add", f"{VIP4}/32", "dev", "eth0")
    capture = run_in_netns(netlab.ns("b"), FrameCapture, ETH_P_ARP)
    try:

        def collect() -> list[float]:
            seen = []
            for _ in range(3):
                capture.wait(_is_garp_for(VIP4))
                seen.append(time.monotonic())
            return seen

        waiting = start_in_netns(netlab.ns("b"), collect)

        async def burst() -> tuple[int, int]:
            announcer = Announcer()
            sent = await announcer.burst("eth0", [VIP4], count=3, interval=0.3)
            return sent, announcer.sent

        assert run_in_netns(netlab.ns("a"), burst) == (3, 3)
        seen = waiting.result(10)
    finally:
        capture.close()
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert all(0.25 <= gap <= 0.6 for gap in gaps), gaps


def error_of(send: Callable[[str, Any], None], ifname: str, vip: object) -> str:
    try:
        send(ifname, vip)
    except AnnounceError as exc:
        return str(exc)
    return "no error"


def test_errors_name_the_cause(netlab: NetLab) -> None:
    def without_raw() -> list[str]:
        drop_effective_capabilities(CAP_NET_RAW)
        return [error_of(send_garp, "eth0", VIP4), error_of(send_unsolicited_na, "eth0", VIP6)]

    assert run_in_netns(netlab.ns("a"), without_raw) == [
        "gratuitous ARP for 192.0.2.50 on eth0 failed: needs CAP_NET_RAW (permission denied)",
        "unsolicited neighbour advertisement for 2001:db8:d9::50 on eth0 failed: "
        "needs CAP_NET_RAW (permission denied)",
    ]

    def missing() -> list[str]:
        return [error_of(send_garp, "eth9", VIP4), error_of(send_unsolicited_na, "eth9", VIP6)]

    assert run_in_netns(netlab.ns("a"), missing) == [
        "gratuitous ARP for 192.0.2.50 on eth9 failed: "
        "interface eth9 does not exist (available: lo, eth0)",
        "unsolicited neighbour advertisement for 2001:db8:d9::50 on eth9 failed: "
        "interface eth9 does not exist (available: lo, eth0)",
    ]

    netlab.ip("a", "link", "set", "eth0", "down")

    assert run_in_netns(netlab.ns("a"), error_of, send_garp, "eth0", VIP4) == (
        "gratuitous ARP for 192.0.2.50 on eth0 failed: interface eth0 is down"
    )
