"""The VIP conflict watch on a real bridge: a host outside the cluster that has the VIP
answers the ARP probe sent as we claim it, or announces it itself, and is reported by MAC;
nothing is reported when nobody else has the address, or after we released it."""

from __future__ import annotations

import asyncio
import time
from functools import partial
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from pgvip.dataplane.announce import send_garp, send_unsolicited_na
from pgvip.dataplane.conflict_watch import Conflict, ConflictWatch, mac_text

from .conftest import NetLab, run_in_netns

pytestmark = pytest.mark.integration

VIP4 = IPv4Address("192.0.2.60")
VIP6 = IPv6Address("2001:db8:d9::60")


class Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


async def watch_for(vips: list[Any], seconds: float, *, then_release: bool = True,
                    during: Any = None) -> tuple[list[Conflict], Log, set[bytes]]:  # fmt: skip
    """Hold `vips` for `seconds` in this thread's namespace; what the watch reported.
    `during` runs in an executor thread, which is in the test's own namespace: it must enter
    a lab namespace itself (run_in_netns) before it sends anything."""
    seen: list[Conflict] = []
    log = Log()
    watch = ConflictWatch("eth0", seen.append, log=log, clock=time.monotonic)
    for vip in vips:
        watch.claimed(vip)
    if during is not None:
        await asyncio.sleep(0.1)
        await asyncio.get_running_loop().run_in_executor(None, during)
    await asyncio.sleep(seconds)
    macs = set(watch.detector.own_macs)
    if then_release:
        for vip in vips:
            watch.released(vip)
    watch.close()
    return seen, log, macs


def test_a_host_that_has_the_vip_answers_our_probe_and_is_reported(netlab: NetLab) -> None:
    netlab.ip("b", "addr", "add", f"{VIP4}/32", "dev", "eth0")  # b: not in the cluster
    seen, log, macs = run_in_netns(netlab.ns("a"), watch_for, [VIP4], 1.0)
    assert log.warnings == []
    assert macs == {bytes.fromhex(netlab.mac("a").replace(":", ""))}
    assert seen, "b's ARP reply to the probe was not reported"
    first = seen[0]
    assert (first.ip, mac_text(first.mac), first.kind) == (VIP4, netlab.mac("b"), "arp reply")
    assert first.new and first.count == 1
    assert first.describe() == f"{netlab.mac('b')} claims {VIP4} (arp reply)"


def test_no_conflict_when_nobody_else_has_the_address(netlab: NetLab) -> None:
    # a really holds the VIP and announces it: its own GARPs are not a conflict.
    netlab.ip("a", "addr", "add", f"{VIP4}/32", "dev", "eth0")

    def a_announces() -> None:  # in a's namespace: never a GARP on the machine's own LAN
        run_in_netns(netlab.ns("a"), send_garp, "eth0", VIP4)

    seen, log, _ = run_in_netns(netlab.ns("a"), partial(watch_for, during=a_announces), [VIP4], 0.5)
    assert (seen, log.warnings) == ([], [])


def test_a_neighbour_advertisement_for_our_ipv6_vip_from_another_mac_is_reported(
    netlab: NetLab,
) -> None:
    def b_announces() -> None:
        run_in_netns(netlab.ns("b"), send_unsolicited_na, "eth0", VIP6)

    seen, _, _ = run_in_netns(netlab.ns("a"), partial(watch_for, during=b_announces), [VIP6], 0.5)
    assert [(c.ip, mac_text(c.mac), c.kind) for c in seen] == [(VIP6, netlab.mac("b"), "na")]


def test_claims_after_the_release_are_not_conflicts(netlab: NetLab) -> None:
    async def hold_release_then_listen() -> list[Conflict]:
        seen: list[Conflict] = []
        watch = ConflictWatch("eth0", seen.append, log=Log(), clock=time.monotonic)
        watch.claimed(VIP6)
        watch.released(VIP6)  # the sockets close with the last VIP
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: run_in_netns(netlab.ns("b"), send_unsolicited_na, "eth0", VIP6)
        )
        await asyncio.sleep(0.3)
        return seen

    assert run_in_netns(netlab.ns("a"), hold_release_then_listen) == []
