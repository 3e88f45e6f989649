"""The real-server side of the RO VIP: the VIP on `lo` of every node, with ARP for it hidden.

A director can then forward packets still addressed to the VIP (IPVS `dr`) and PostgreSQL answers
from it, while only the director answers ARP for the VIP.
"""

from __future__ import annotations

import ipaddress

from pgvip.dataplane.addresses import AddressError, AddressManager
from pgvip.dataplane.balancer import IPAddress, LoadBalancerError
from pgvip.dataplane.sysctl import apply_sysctls


def real_server_sysctls(interface: str | None = None) -> dict[str, str]:
    """ARP settings for a DR real server holding the VIP on lo.

    arp_ignore=1: answer ARP only for addresses on the asking interface (not the VIP on lo);
    arp_announce=2: never use the VIP as ARP source. The kernel takes the max of `all` and
    the interface, so setting `all` suffices; the interface is set too for clarity.
    """
    wanted = {"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"}
    if interface:
        wanted[f"net/ipv4/conf/{interface}/arp_ignore"] = "1"
        wanted[f"net/ipv4/conf/{interface}/arp_announce"] = "2"
    return wanted


async def setup_real_server(
    vip: IPAddress, *, netns: str | None = None, interface: str | None = None
) -> bool:
    """Make this node a DR real server for `vip`: the VIP on `lo` (host prefix, tagged
    PGVIP_IFA_PROTO) and, for IPv4, the ARP sysctls. True if the address was added now.

    PostgreSQL must also listen on the VIP (listen_addresses = '*').
    """
    if vip.version == 4:
        await apply_sysctls(real_server_sysctls(interface), netns=netns)
    try:
        async with AddressManager("lo", netns) as lo:
            return await lo.add(ipaddress.ip_interface(f"{vip}/{vip.max_prefixlen}"))
    except AddressError as exc:
        raise LoadBalancerError(f"cannot put RO VIP {vip} on lo: {exc}") from exc


async def teardown_real_server(vip: IPAddress, *, netns: str | None = None) -> bool:
    """Remove the VIP from `lo`; True if it was there. The ARP sysctls stay (harmless)."""
    try:
        async with AddressManager("lo", netns) as lo:
            return await lo.remove(ipaddress.ip_interface(f"{vip}/{vip.max_prefixlen}"))
    except AddressError as exc:
        raise LoadBalancerError(f"cannot remove RO VIP {vip} from lo: {exc}") from exc
