"""AddressManager, release_all and AddressWatcher against real interfaces in test namespaces."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from ipaddress import ip_interface
from typing import Any

import pytest
from pyroute2 import AsyncIPRoute

from pgvip.dataplane.address_watcher import (
    AddressChanged,
    AddressWatcher,
    EventsLost,
    LinkChanged,
    Notification,
)
from pgvip.dataplane.addresses import (
    PGVIP_IFA_PROTO,
    AddressError,
    AddressManager,
    ReleasedAddress,
    release_all,
)
from pgvip.dataplane.privileges import CAP_NET_ADMIN

from .conftest import NetLab, drop_effective_capabilities, run_in_netns

pytestmark = pytest.mark.integration

VIP4 = ip_interface("192.0.2.50/32")
VIP6 = ip_interface("2001:db8:d9::50/128")


async def kernel_protos(ns: str, ifname: str = "eth0") -> dict[str, int | None]:
    """address/prefixlen -> IFA_PROTO as the kernel reports it (iproute2 6.1 cannot show it)."""
    async with AsyncIPRoute(netns=ns, flags=0) as ipr:
        (index,) = await ipr.link_lookup(ifname=ifname)
        return {
            f"{msg.get('address')}/{msg['prefixlen']}": msg.get("proto")
            async for msg in await ipr.addr("dump", index=index)
        }


async def test_add_is_tagged_and_idempotent(netlab: NetLab) -> None:
    ns = netlab.ns("a")
    async with AddressManager("eth0", netns=ns) as addrs:
        assert await addrs.add(VIP4) is True
        assert await addrs.add(VIP4) is False  # EEXIST: already there
        assert await addrs.add(VIP6) is True
        assert await addrs.add(VIP6) is False
        assert await addrs.owned() == {VIP4, VIP6}
        assert await addrs.has(VIP4) and await addrs.has(VIP6)
        assert not await addrs.has(ip_interface("192.0.2.50/24"))  # prefix is part of the key

    protos = await kernel_protos(ns)
    assert protos["192.0.2.50/32"] == PGVIP_IFA_PROTO == 154
    assert protos["2001:db8:d9::50/128"] == PGVIP_IFA_PROTO
    assert protos["192.0.2.1/24"] != PGVIP_IFA_PROTO  # the node's own address is not ours
    shown = netlab.ip("a", "-4", "addr", "show", "dev", "eth0")
    assert "192.0.2.50/32" in shown


async def test_remove_is_idempotent_and_owned_ignores_untagged(netlab: NetLab) -> None:
    netlab.ip("a", "addr", "add", "192.0.2.77/32", "dev", "eth0")  # an operator's address
    async with AddressManager("eth0", netns=netlab.ns("a")) as addrs:
        await addrs.add(VIP4)
        assert await addrs.owned() == {VIP4}
        assert await addrs.has(ip_interface("192.0.2.77/32"))  # present, but not ours
        assert await addrs.remove(VIP4) is True
        assert await addrs.remove(VIP4) is False
        assert await addrs.remove(VIP6) is False  # never added
        assert await addrs.owned() == set()
    assert "192.0.2.50" not in netlab.ip("a", "addr", "show", "dev", "eth0")


async def test_ipv6_vip_is_added_without_dad(netlab: NetLab) -> None:
    # DAD on for eth0 from here: a plain add must be tentative, ours must not be.
    netlab.sysctl("a", "net.ipv6.conf.eth0.accept_dad", "1")
    netlab.ip("a", "addr", "add", "2001:db8:d9::99/128", "dev", "eth0")
    async with AddressManager("eth0", netns=netlab.ns("a")) as addrs:
        await addrs.add(VIP6)
    infos = {i["local"]: i for i in netlab.addr_info("a") if i["family"] == "inet6"}
    assert infos["2001:db8:d9::99"].get("tentative") is True  # the control: DAD is active
    assert not infos["2001:db8:d9::50"].get("tentative")
    assert infos["2001:db8:d9::50"].get("nodad") is True


def test_manager_defaults_to_the_current_namespace(netlab: NetLab) -> None:
    """The daemon runs inside the node namespace (ip netns exec) and passes no netns."""

    async def body() -> set[object]:
        async with AddressManager("eth0") as addrs:
            assert await addrs.add(VIP4)
            return set(await addrs.owned())

    assert run_in_netns(netlab.ns("b"), body) == {VIP4}
    assert "192.0.2.50/32" in netlab.ip("b", "addr", "show", "dev", "eth0")
    assert "192.0.2.50" not in netlab.ip("a", "addr", "show", "dev", "eth0")


async def test_missing_interface_and_namespace_errors(netlab: NetLab) -> None:
    with pytest.raises(AddressError) as info:
        async with AddressManager("eth9", netns=netlab.ns("a")):
            pass
    assert str(info.value) == "interface eth9 does not exist (available: lo, eth0)"
    with pytest.raises(AddressError, match=r"network namespace t-dp-nope-x does not exist"):
        async with AddressManager("eth0", netns="t-dp-nope-x"):
            pass
    assert not subprocess.run(["ip", "netns", "pids", "t-dp-nope-x"], capture_output=True).stdout
    assert (
        "t-dp-nope-x" not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    )


def test_add_without_cap_net_admin_says_so(netlab: NetLab) -> None:
    async def body() -> str:
        drop_effective_capabilities(CAP_NET_ADMIN)
        async with AddressManager("eth0") as addrs:
            try:
                await addrs.add(VIP4)
            except AddressError as exc:
                return str(exc)
        return "no error"

    message = run_in_netns(netlab.ns("a"), body)
    assert message == "adding 192.0.2.50/32 to eth0 failed: needs CAP_NET_ADMIN (permission denied)"


async def test_reresolves_a_recreated_link(netlab: NetLab) -> None:
    netlab.ip("a", "link", "add", "vip0", "type", "veth", "peer", "name", "vip0p")
    netlab.ip("a", "link", "set", "vip0", "up")
    async with AddressManager("vip0", netns=netlab.ns("a")) as addrs:
        first = await addrs.ifindex()
        assert await addrs.add(VIP4)
        netlab.ip("a", "link", "del", "vip0")
        netlab.ip("a", "link", "add", "vip0", "type", "veth", "peer", "name", "vip0p")
        netlab.ip("a", "link", "set", "vip0", "up")
        # The cached index is stale: add() hits ENODEV, looks the name up again and retries.
        assert await addrs.add(VIP4) is True
        assert await addrs.ifindex() != first
        assert await addrs.owned() == {VIP4}
        netlab.ip("a", "link", "del", "vip0")
        with pytest.raises(AddressError, match=r"interface vip0 does not exist"):
            await addrs.add(VIP4)


async def test_release_all_removes_only_tagged_addresses(netlab: NetLab) -> None:
    ns = netlab.ns("a")
    netlab.ip("a", "addr", "add", "192.0.2.77/32", "dev", "eth0")
    ro_vip = ip_interface("192.0.2.49/32")
    async with AddressManager("eth0", netns=ns) as addrs:
        await addrs.add(VIP4)
        await addrs.add(VIP6)
    async with AddressManager("lo", netns=ns) as lo:
        await lo.add(ro_vip)

    released = await release_all("eth0", netns=ns)
    assert sorted(released, key=str) == sorted(
        [
            ReleasedAddress("eth0", VIP4),
            ReleasedAddress("eth0", VIP6),
            ReleasedAddress("lo", ro_vip),
        ],
        key=str,
    )
    eth0 = netlab.ip("a", "addr", "show", "dev", "eth0")
    assert "192.0.2.77/32" in eth0 and "192.0.2.1/24" in eth0  # untagged ones stay
    assert "192.0.2.50" not in eth0 and "2001:db8:d9::50" not in eth0
    assert "192.0.2.49" not in netlab.ip("a", "addr", "show", "dev", "lo")
    assert str(released[0]).endswith(" on eth0") or str(released[0]).endswith(" on lo")
    assert await release_all("eth0", netns=ns) == []  # nothing left: idempotent
    with pytest.raises(AddressError, match=r"interface eth7 does not exist"):
        await release_all("eth7", netns=ns)


async def next_matching(
    watcher: AddressWatcher, predicate: Callable[[Notification], bool], timeout: float = 5.0
) -> Any:
    async with asyncio.timeout(timeout):
        async for note in watcher:
            if predicate(note):
                return note
    raise AssertionError("watcher ended")


async def test_watcher_reports_address_removal_and_link_flap(netlab: NetLab) -> None:
    ns = netlab.ns("a")
    async with AddressManager("eth0", netns=ns) as addrs:
        await addrs.add(VIP4)
    async with AddressWatcher(netns=ns) as watcher:
        netlab.ip("a", "addr", "del", "192.0.2.50/32", "dev", "eth0")
        removed = await next_matching(watcher, lambda n: isinstance(n, AddressChanged))
        assert removed == AddressChanged(
            ifname="eth0", index=removed.index, address=VIP4, added=False, tagged=True
        )

        netlab.ip("a", "link", "set", "eth0", "down")
        down = await next_matching(
            watcher, lambda n: isinstance(n, LinkChanged) and n.ifname == "eth0"
        )
        assert (down.up, down.carrier, down.removed) == (False, False, False)

        netlab.ip("a", "link", "set", "eth0", "up")
        up = await next_matching(
            watcher, lambda n: isinstance(n, LinkChanged) and n.ifname == "eth0" and n.up
        )
        assert up.index == removed.index
        # The veth needs its peer's carrier; wait for it to come back as well.
        if not up.carrier:
            up = await next_matching(
                watcher, lambda n: isinstance(n, LinkChanged) and n.ifname == "eth0"
            )
        assert up.carrier is True


async def test_watcher_sees_an_added_address_with_its_tag(netlab: NetLab) -> None:
    ns = netlab.ns("a")
    async with AddressWatcher(netns=ns) as watcher:
        async with AddressManager("eth0", netns=ns) as addrs:
            await addrs.add(VIP6)
        netlab.ip("a", "addr", "add", "2001:db8:d9::77/128", "dev", "eth0", "nodad")
        notes = [
            await next_matching(watcher, lambda n: isinstance(n, AddressChanged)),
            await next_matching(watcher, lambda n: isinstance(n, AddressChanged)),
        ]
    assert [(n.address, n.added, n.tagged, n.ifname) for n in notes] == [
        (VIP6, True, True, "eth0"),
        (ip_interface("2001:db8:d9::77/128"), True, False, "eth0"),
    ]


async def test_watcher_recovers_from_an_overrun(netlab: NetLab) -> None:
    """A tiny receive buffer and a storm of changes: the kernel drops events (ENOBUFS)."""
    ns = netlab.ns("a")
    async with AddressWatcher(netns=ns, rcvbuf=1024) as watcher:
        # Blocking the loop keeps the watcher from reading while the kernel queues events.
        script = "".join(f"addr add 192.0.2.{i}/32 dev eth0\n" for i in range(100, 250))
        subprocess.run(
            ["ip", "-n", ns, "-batch", "-"], input=script, text=True, check=True, timeout=30
        )
        lost = await next_matching(watcher, lambda n: isinstance(n, EventsLost))
        assert "No buffer space" in lost.reason
        # And it keeps working afterwards.
        netlab.ip("a", "addr", "del", "192.0.2.100/32", "dev", "eth0")
        note = await next_matching(
            watcher,
            lambda n: isinstance(n, AddressChanged) and not n.added,
        )
        assert note.address == ip_interface("192.0.2.100/32")


async def test_long_lived_manager_leaves_no_unread_netlink_messages(netlab: NetLab) -> None:
    """pyroute2 0.9.7 queues the ACK of every link("get") where nobody reads: a slow leak
    in a daemon that reconciles every few seconds. The manager must not use it."""
    async with AddressManager("eth0", netns=netlab.ns("a")) as addrs:
        for _ in range(20):
            await addrs.has(VIP4)
            await addrs.add(VIP4)
            await addrs.owned()
            await addrs.remove(VIP4)
            await addrs.remove(VIP4)
        assert addrs._sock.msg_queue.queues[0].qsize() == 0


async def test_closing_the_watcher_ends_the_iteration(netlab: NetLab) -> None:
    watcher = AddressWatcher(netns=netlab.ns("a"))
    await watcher.open()
    seen: list[Notification] = []

    async def consume() -> None:
        async for note in watcher:
            seen.append(note)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    watcher.close()
    await asyncio.wait_for(task, 2)  # ends cleanly instead of hanging
    assert seen == []
