"""Read-only facts about an interface: does it exist, and what is its primary address."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from pyroute2 import AsyncIPRoute

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InterfaceError(RuntimeError):
    """The interface is missing or has no usable address."""


async def primary_address(
    ifname: str, version: int, exclude: Iterable[IPAddress] = ()
) -> IPAddress:
    """The address VRRP adverts are sent from: the first permanent, global (IPv4) or
    link-local (IPv6, RFC 5798 §5.1.2.1) address on `ifname` that is not a VIP."""
    excluded = set(exclude)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    async with AsyncIPRoute() as ipr:
        links = [link async for link in await ipr.link("dump")]
        index = next((lk["index"] for lk in links if lk.get("ifname") == ifname), None)
        if index is None:
            names = ", ".join(sorted(str(lk.get("ifname")) for lk in links))
            raise InterfaceError(f"interface {ifname} does not exist (available: {names})")
        candidates: list[IPAddress] = []
        async for msg in await ipr.addr("dump", family=family):
            if msg["index"] != index:
                continue
            addr = ipaddress.ip_address(msg.get("address"))
            if addr in excluded:
                continue
            if msg.get("IFA_PROTO") == 0x9A:  # one of ours from an earlier run
                continue
            candidates.append(addr)
    if version == 6:
        candidates = [a for a in candidates if a.is_link_local] or candidates
    else:
        candidates = [a for a in candidates if not a.is_loopback]
    if not candidates:
        raise InterfaceError(
            f"interface {ifname} has no IPv{version} address to send VRRP from; "
            f"set vrrp.unicast_src or give {ifname} an address"
        )
    return candidates[0]
