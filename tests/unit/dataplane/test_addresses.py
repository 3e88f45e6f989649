"""Netlink notification translation and argument checks of the address module (no netlink)."""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from pgvip.dataplane.address_watcher import AddressChanged, AddressWatcher, LinkChanged
from pgvip.dataplane.addresses import IFF_LOWER_UP, IFF_UP, PGVIP_IFA_PROTO, AddressManager


def watcher_knowing(names: dict[int, str]) -> AddressWatcher:
    watcher = AddressWatcher()
    watcher._names = dict(names)
    watcher._link_state = {index: (True, True) for index in names}
    return watcher


def link(event: str, index: int, flags: int, ifname: str | None = "eth0") -> dict[str, object]:
    return {"event": event, "index": index, "flags": flags, "ifname": ifname}


def test_link_changes_are_reported_once_per_state() -> None:
    watcher = watcher_knowing({2: "eth0"})
    up = IFF_UP | IFF_LOWER_UP
    assert watcher._translate(link("RTM_NEWLINK", 2, up)) is None  # same state: no news
    assert watcher._translate(link("RTM_NEWLINK", 2, 0)) == LinkChanged("eth0", 2, False, False)
    assert watcher._translate(link("RTM_NEWLINK", 2, 0)) is None
    assert watcher._translate(link("RTM_NEWLINK", 2, IFF_UP)) == LinkChanged("eth0", 2, True, False)
    assert watcher._translate(link("RTM_NEWLINK", 2, up)) == LinkChanged("eth0", 2, True, True)


def test_new_and_removed_links() -> None:
    watcher = watcher_knowing({})
    assert watcher._translate(link("RTM_NEWLINK", 7, IFF_UP, "vip0")) == LinkChanged(
        "vip0", 7, True, False
    )
    assert watcher.ifname(7) == "vip0"
    assert watcher._translate(link("RTM_DELLINK", 7, 0, None)) == LinkChanged(
        "vip0", 7, False, False, removed=True
    )
    assert watcher.ifname(7) is None


def test_address_notifications_carry_name_and_tag() -> None:
    watcher = watcher_knowing({2: "eth0"})
    ours = {
        "event": "RTM_DELADDR",
        "family": 2,
        "index": 2,
        "local": "192.0.2.50",
        "address": "192.0.2.50",
        "prefixlen": 32,
        "proto": PGVIP_IFA_PROTO,
    }
    assert watcher._translate(ours) == AddressChanged(
        "eth0", 2, ip_interface("192.0.2.50/32"), added=False, tagged=True
    )
    theirs = {
        "event": "RTM_NEWADDR",
        "family": 10,
        "index": 9,
        "address": "2001:db8::7",
        "prefixlen": 64,
        "proto": None,
    }
    assert watcher._translate(theirs) == AddressChanged(
        None, 9, ip_interface("2001:db8::7/64"), added=True, tagged=False
    )


def test_point_to_point_addresses_use_the_local_side() -> None:
    watcher = watcher_knowing({3: "tun0"})
    msg = {
        "event": "RTM_NEWADDR",
        "family": 2,
        "index": 3,
        "local": "10.0.0.1",
        "address": "10.0.0.2",
        "prefixlen": 32,
    }
    note = watcher._translate(msg)
    assert isinstance(note, AddressChanged) and note.address == ip_interface("10.0.0.1/32")


def test_other_messages_are_ignored() -> None:
    watcher = watcher_knowing({2: "eth0"})
    assert watcher._translate({"event": "RTM_NEWROUTE"}) is None
    assert watcher._translate({"event": "RTM_NEWADDR", "family": 7, "index": 2}) is None


async def test_a_vip_must_be_an_interface_object() -> None:
    manager = AddressManager("eth0")
    with pytest.raises(TypeError, match="IPv4Interface or IPv6Interface"):
        await manager.add("192.0.2.50/32")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="IPv4Interface or IPv6Interface"):
        await manager.remove(ip_interface("192.0.2.50/32").ip)  # type: ignore[arg-type]


async def test_using_a_manager_before_open_is_an_address_error() -> None:
    from pgvip.dataplane.addresses import AddressError

    with pytest.raises(AddressError, match="address manager for eth0 is not open"):
        await AddressManager("eth0").add(ip_interface("192.0.2.50/32"))
