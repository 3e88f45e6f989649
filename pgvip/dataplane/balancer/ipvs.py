"""The IPVS RO balancer: it executes `ipvs_plan.plan` through pyroute2's AsyncIPVS.

The executor sends "add"/"set"/"del" only (pyroute2's "update" sends a delete).

Topology: IPVS "nat" alone rewrites only the destination, so on one flat subnet the backends'
replies would bypass the director. pgvip's "nat" is therefore one-armed, as the nftables
dataplane is: `ipvs_masquerade` adds `net.ipv4.vs.conntrack = 1` and a masquerade of the
VIP's connections, so replies come back through the director wherever the backends route
(PostgreSQL sees the director's address as the client). "dr" keeps the client's address, with
`realserver.setup_real_server()` on every node (VIP on lo, ARP hidden).
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pgvip.dataplane.balancer import IPAddress, LoadBalancerError, VirtualService, check_names
from pgvip.dataplane.balancer.ipvs_masquerade import CONNTRACK_SYSCTL, IpvsMasquerade
from pgvip.dataplane.balancer.ipvs_plan import (
    FORWARDING_CODES,
    IP_VS_SVC_F_PERSISTENT,
    IPPROTO_TCP,
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    EditDest,
    EditService,
    Op,
    Service,
    parse_dest,
    parse_service,
    plan,
    to_virtual_service,
)
from pgvip.dataplane.balancer.nftables import find_nft
from pgvip.dataplane.sysctl import PROC_SYS, SysctlKeeper, forwarding_sysctls
from pgvip.naming import StateNames

if TYPE_CHECKING:
    from pyroute2 import AsyncIPVS

MAX_PERSISTENCE = 2**31 - 1


# -- pyroute2 request objects ------------------------------------------------------
def service_request(service: Service) -> Any:
    from pyroute2 import IPVSService

    fields: dict[str, Any] = {
        "addr": str(service.vip),
        "port": service.port,
        "protocol": IPPROTO_TCP,
        "sched_name": service.scheduler,
        "timeout": service.persistence_timeout,
        # Touch only the persistence bit; leave the kernel's own flags (hashed, ...) alone.
        "flags": {
            "flags": IP_VS_SVC_F_PERSISTENT if service.persistence_timeout else 0,
            "mask": IP_VS_SVC_F_PERSISTENT,
        },
    }
    if service.vip.version == 6:
        # The kernel wants every full service to carry a netmask; for IPv6 it is a prefix
        # length as a host-order u32, which pyroute2 only knows how to send as "ip4addr".
        fields["netmask"] = socket.inet_ntoa(struct.pack("=I", 128))
    return IPVSService(**fields)


def dest_request(dest: Dest) -> Any:
    from pyroute2 import IPVSDest

    return IPVSDest(
        addr=str(dest.address),
        port=dest.port,
        weight=dest.weight,
        fwd_method=FORWARDING_CODES[dest.forwarding],
    )


def _describe(op: Op) -> str:
    s = op.service
    name = type(op).__name__
    if isinstance(op, AddDest | EditDest | DelDest):
        d = op.dest
        return f"{name} {s.vip}:{s.port} -> {d.address}:{d.port} weight {d.weight} {d.forwarding}"
    return f"{name} {s.vip}:{s.port} {s.scheduler} persistence {s.persistence_timeout}"


async def execute(ipvs: AsyncIPVS, ops: Iterable[Op]) -> None:
    """Send `ops` in order; the first failure stops with LoadBalancerError naming the op."""
    from pyroute2.netlink.exceptions import NetlinkError

    for op in ops:
        svc = service_request(op.service)
        try:
            if isinstance(op, AddService):
                await ipvs.service("add", service=svc)
            elif isinstance(op, EditService):
                await ipvs.service("set", service=svc)
            elif isinstance(op, DelService):
                await ipvs.service("del", service=svc)
            elif isinstance(op, AddDest):
                await ipvs.dest("add", service=svc, dest=dest_request(op.dest))
            elif isinstance(op, EditDest):
                await ipvs.dest("set", service=svc, dest=dest_request(op.dest))
            else:
                await ipvs.dest("del", service=svc, dest=dest_request(op.dest))
        except (NetlinkError, OSError) as exc:
            code = getattr(exc, "code", None) or getattr(exc, "errno", None)
            reason = errno.errorcode.get(code, str(exc)) if isinstance(code, int) else str(exc)
            hint = ""
            if code == errno.EINVAL and isinstance(op, AddDest | EditDest):
                hint = " (is 'lo' up in this namespace? IPVS rejects dests without it)"
            raise LoadBalancerError(f"IPVS {_describe(op)} failed: {reason}{hint}") from exc


# A dest deleted after ro.drain_timeout: with the kernel's default 0, IPVS silently drops the
# packets of its remaining connections (the client hangs until its TCP timeout); with 1 it
# expires each one at its next packet, so the client gets a reset and reconnects at once.
DRAIN_SYSCTL = {"net/ipv4/vs/expire_nodest_conn": "1"}


class IpvsLoadBalancer:
    """LoadBalancer over one IPVS virtual service, optionally inside `netns`.

    Pass `service=(vip, port)` when the daemon starts, so `actual()` and `clear()` find a
    service left behind by a previous run; apply() learns it too. Other IPVS services on the
    host are never touched.
    """

    name: ClassVar[str] = "ipvs"

    def __init__(
        self,
        *,
        interface: str | None = None,
        netns: str | None = None,
        service: tuple[IPAddress, int] | None = None,
        manage_sysctls: bool = True,
        proc_root: Path = PROC_SYS,
        nft: str | None = None,
        instance: str | None = None,
    ) -> None:
        self.interface = interface
        self.netns = netns
        self.manage_sysctls = manage_sysctls
        names = StateNames(instance)
        self.sysctls = SysctlKeeper(netns=netns, proc_root=proc_root, names=names)
        table = names.masquerade_table
        self.masquerade = IpvsMasquerade(nft or find_nft(), netns=netns, table=table)
        self._key = None if service is None else (service[0], service[1], "tcp")
        self._forwarding = "nat"

    @classmethod
    def check(cls, scheduler: str, forwarding: str, persistence_timeout: int) -> None:
        check_names(scheduler, forwarding)
        if not 0 <= persistence_timeout <= MAX_PERSISTENCE:
            raise LoadBalancerError(
                f"persistence_timeout must be 0-{MAX_PERSISTENCE} s, got {persistence_timeout}"
            )

    async def _open(self) -> AsyncIPVS:
        from pyroute2 import AsyncIPVS
        from pyroute2.netlink.exceptions import NetlinkError

        ipvs = AsyncIPVS(netns=self.netns, flags=0) if self.netns else AsyncIPVS()
        try:
            await ipvs.setup_endpoint()
        except NetlinkError as exc:
            ipvs.close()
            if exc.code == errno.ENOENT:
                raise LoadBalancerError(
                    "IPVS unavailable: genetlink family IPVS not found (load ip_vs)"
                ) from exc
            raise LoadBalancerError(f"cannot open IPVS netlink: {exc}") from exc
        except OSError as exc:
            ipvs.close()
            raise LoadBalancerError(f"cannot open IPVS netlink: {exc}") from exc
        return ipvs

    async def _read(self, ipvs: AsyncIPVS) -> VirtualService | None:
        if self._key is None:
            return None
        for msg in await ipvs.service("dump"):
            service = parse_service(msg)
            if service is None or service.key != self._key:
                continue
            dests = [
                parse_dest(d) for d in await ipvs.dest("dump", service=service_request(service))
            ]
            return to_virtual_service(service, dests, self._forwarding)
        return None

    async def actual(self) -> VirtualService | None:
        ipvs = await self._open()
        try:
            return await self._read(ipvs)
        finally:
            ipvs.close()

    async def apply(self, desired: VirtualService) -> bool:
        self.check(desired.scheduler, desired.forwarding, desired.persistence_timeout)
        changed = False
        nat = desired.forwarding == "nat"
        ipvs = await self._open()  # first: it loads ip_vs, which brings net/ipv4/vs/conntrack
        try:
            if self.manage_sysctls:
                wanted = dict(DRAIN_SYSCTL)
                if nat:
                    wanted |= forwarding_sysctls(self.interface, desired.vip.version)
                    wanted |= CONNTRACK_SYSCTL
                changed = await self.sysctls.ensure(wanted)
            if nat:
                changed = await self.masquerade.ensure(desired.vip, desired.port) or changed
            else:
                changed = await self.masquerade.remove() or changed
            try:
                current = await self._read(ipvs)
            except LoadBalancerError:
                # A service we cannot fold (mixed forwarding methods): rebuild it whole.
                assert self._key is not None
                stale = Service(self._key[0], self._key[1])
                await execute(ipvs, [DelService(stale)])
                current = None
            ops = plan(current, desired)
            await execute(ipvs, ops)
            self._key = (desired.vip, desired.port, desired.protocol)
            self._forwarding = desired.forwarding
            return changed or bool(ops)
        finally:
            ipvs.close()

    async def clear(self) -> None:
        ipvs = await self._open()
        try:
            current = await self._read(ipvs)
            if current is not None:
                await execute(ipvs, plan(current, None))
        finally:
            ipvs.close()
        # Quickest first (a shutdown has a budget): /proc writes, then the nft command.
        await self.sysctls.restore()
        await self.masquerade.remove()
