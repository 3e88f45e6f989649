"""The `auto` dataplane choice: is there IPVS on this host, and which balancer class to use."""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable

from pgvip.dataplane.balancer import LoadBalancerClass, LoadBalancerError, check_names
from pgvip.dataplane.balancer.ipvs import IpvsLoadBalancer
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer, find_nft

DATAPLANES = ("auto", "ipvs", "nftables")


# -- is there IPVS? ------------------------------------------------------------
_NETLINK_GENERIC = 16
_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY = 3
_CTRL_ATTR_FAMILY_NAME = 2
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1


def ipvs_available() -> tuple[bool, str]:
    """Ask the generic-netlink controller for the IPVS family; ENOENT means no IPVS.

    Plain stdlib netlink keeps this cheap enough for `check-config` and avoids importing
    pyroute2 just to decide not to use it. Asking may autoload the ip_vs module.
    """
    name = b"IPVS\0"
    attr = struct.pack("=HH", 4 + len(name), _CTRL_ATTR_FAMILY_NAME) + name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", _CTRL_CMD_GETFAMILY, 1, 0) + attr
    request = struct.pack("=IHHII", 16 + len(body), _GENL_ID_CTRL, _NLM_F_REQUEST, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC) as sock:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            sock.send(request)
            reply = sock.recv(65536)
    except OSError as exc:
        return False, f"cannot ask generic netlink for IPVS: {exc}"
    if len(reply) < 16:
        return False, "cannot ask generic netlink for IPVS: short reply"
    _, msg_type = struct.unpack_from("=IH", reply)
    if msg_type == _GENL_ID_CTRL:
        return True, "genetlink family IPVS found"
    if msg_type == _NLMSG_ERROR and len(reply) >= 20:
        (code,) = struct.unpack_from("=i", reply, 16)
        if -code == errno.ENOENT:
            return False, "genetlink family IPVS not found"
        return False, f"genetlink lookup of IPVS failed: {errno.errorcode.get(-code, -code)}"
    return False, f"genetlink lookup of IPVS: unexpected reply type {msg_type}"


def choose_dataplane(
    requested: str,
    *,
    scheduler: str = "rr",
    forwarding: str = "nat",
    persistence_timeout: int = 0,
    probe: Callable[[], tuple[bool, str]] = ipvs_available,
    which: Callable[[str], str | None] | None = None,
) -> tuple[LoadBalancerClass, str]:
    """Pick the balancer class for `requested` ("auto", "ipvs", "nftables") and say why.

    An explicit choice the host cannot honour is an error, never a silent fallback; so is a
    scheduler/forwarding the chosen dataplane cannot do. Run at start-up.
    """
    if requested not in DATAPLANES:
        raise LoadBalancerError(
            f"unknown dataplane {requested!r}; use one of {', '.join(DATAPLANES)}"
        )
    check_names(scheduler, forwarding)
    chosen: LoadBalancerClass
    if requested == "nftables":
        chosen, reason = NftablesLoadBalancer, "nftables requested"
    else:
        has_ipvs, detail = probe()
        if has_ipvs:
            chosen, reason = IpvsLoadBalancer, f"IPVS available: {detail}"
            if requested == "auto":
                reason += "; using IPVS"
        elif requested == "ipvs":
            raise LoadBalancerError(
                f"dataplane 'ipvs' requested but IPVS is unavailable: {detail} "
                "(load the ip_vs module, or set dataplane to 'nftables' or 'auto')"
            )
        else:
            chosen, reason = NftablesLoadBalancer, f"IPVS unavailable: {detail}; using nftables"
    if which is None:

        def which(_name: str) -> str | None:
            return find_nft()

    if chosen is NftablesLoadBalancer and which("nft") is None:
        raise LoadBalancerError(
            f"the nftables dataplane needs the 'nft' command, which is not installed "
            f"(install the 'nftables' package) [{reason}]"
        )
    if chosen is IpvsLoadBalancer and forwarding == "nat" and which("nft") is None:
        raise LoadBalancerError(
            "IPVS 'nat' forwarding is one-armed: it needs the 'nft' command for its masquerade, "
            f"which is not installed (install the 'nftables' package, or set ro.forwarding = "
            f"'dr') [{reason}]"
        )
    try:
        chosen.check(scheduler, forwarding, persistence_timeout)
    except LoadBalancerError as exc:
        raise LoadBalancerError(f"{exc} [{reason}]") from exc
    return chosen, reason


def explain_forwarding(dataplane: str, forwarding: str) -> str:
    """Why `forwarding` on `dataplane` works where it does, in one line: for the start-up log
    and the status API, beside the dataplane's own reason."""
    if forwarding == "nat" and dataplane == "ipvs":
        return (
            "nat, one-armed: IPVS NAT plus net.ipv4.vs.conntrack=1 and an nft masquerade "
            "(table inet pgvip_ipvs), so replies return through the director on a flat LAN "
            "too; PostgreSQL sees the director's address as the client"
        )
    if forwarding == "nat":
        return (
            "nat, one-armed: nftables DNAT plus masquerade, so replies return through the "
            "director on a flat LAN too; PostgreSQL sees the director's address as the client"
        )
    if forwarding == "dr":
        return (
            "dr: the client's address is kept; every node keeps the RO VIP on lo with ARP "
            "hidden while not directing, and all nodes must share the director's L2 segment"
        )
    return (
        "tun: the client's address is kept; each real server needs an IPIP tunnel device "
        "holding the RO VIP, which pgvip does not set up"
    )
