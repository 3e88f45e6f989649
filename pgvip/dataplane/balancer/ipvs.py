"""The IPVS RO balancer: a pure minimal-diff planner and its pyroute2 executor.

`plan(actual, desired)` turns two VirtualServices into the fewest IPVS operations; the executor
sends them through pyroute2's AsyncIPVS with "add"/"set"/"del" only (its "update" sends a
delete). Readback parses the IPVS_*_ATTR_* keys of the dump itself, because pyroute2's
`from_message()` keeps class defaults for the forwarding method, timeout and weight.

Topology: IPVS "nat" does not rewrite the client's address, so the backends' replies must be
routed through the director (its address as their gateway); on one flat subnet use "dr",
with `realserver.setup_real_server()` on every node (VIP on lo, ARP hidden). The nftables dataplane
masquerades instead and works one-armed.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pgvip.dataplane.balancer import (
    SCHEDULERS,
    IPAddress,
    LoadBalancerError,
    RealServer,
    VirtualService,
    check_names,
)
from pgvip.dataplane.sysctl import PROC_SYS, SysctlKeeper, forwarding_sysctls

if TYPE_CHECKING:
    from pyroute2 import AsyncIPVS

# IPVS_DEST_ATTR_FWD_METHOD values (IP_VS_CONN_F_MASQ / _TUNNEL / _DROUTE).
FORWARDING_CODES = {"nat": 0, "tun": 2, "dr": 3}
_FORWARDING_NAMES = {code: name for name, code in FORWARDING_CODES.items()}
IP_VS_SVC_F_PERSISTENT = 0x0001
IPPROTO_TCP = socket.IPPROTO_TCP
MAX_PERSISTENCE = 2**31 - 1


@dataclass(frozen=True)
class Service:
    """The service part of a VirtualService: its key (vip, port, protocol) and its settings."""

    vip: IPAddress
    port: int
    protocol: str = "tcp"
    scheduler: str = "rr"
    persistence_timeout: int = 0

    @property
    def key(self) -> tuple[IPAddress, int, str]:
        return (self.vip, self.port, self.protocol)

    @classmethod
    def of(cls, vs: VirtualService) -> Service:
        return cls(vs.vip, vs.port, vs.protocol, vs.scheduler, vs.persistence_timeout)


@dataclass(frozen=True)
class Dest:
    address: IPAddress
    port: int
    weight: int
    forwarding: str

    @property
    def key(self) -> tuple[IPAddress, int]:
        return (self.address, self.port)


@dataclass(frozen=True)
class AddService:
    service: Service


@dataclass(frozen=True)
class EditService:
    service: Service


@dataclass(frozen=True)
class DelService:
    service: Service


@dataclass(frozen=True)
class AddDest:
    service: Service
    dest: Dest


@dataclass(frozen=True)
class EditDest:
    service: Service
    dest: Dest


@dataclass(frozen=True)
class DelDest:
    service: Service
    dest: Dest


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest


def _dests(vs: VirtualService) -> dict[tuple[IPAddress, int], Dest]:
    return {
        (rs.address, rs.port): Dest(rs.address, rs.port, rs.weight, vs.forwarding)
        for rs in vs.backends
    }


def plan(actual: VirtualService | None, desired: VirtualService | None) -> list[Op]:
    """The minimal IPVS operations that turn `actual` into `desired` (None = no service).

    Order keeps traffic flowing: the service first, then new dests, then changed ones,
    removals last. A different service key (vip, port, protocol) is a new service; the old
    one is deleted after the new one is complete. Draining (weight 0 before removal) is the
    policy's job: here a weight is just a weight.
    """
    if desired is None:
        return [] if actual is None else [DelService(Service.of(actual))]
    want = Service.of(desired)
    want_dests = _dests(desired)
    if actual is None or Service.of(actual).key != want.key:
        ops: list[Op] = [AddService(want)]
        ops += [AddDest(want, d) for d in want_dests.values()]
        if actual is not None:
            ops.append(DelService(Service.of(actual)))
        return ops

    ops = []
    if Service.of(actual) != want:
        ops.append(EditService(want))
    have_dests = _dests(actual)
    ops += [AddDest(want, d) for k, d in want_dests.items() if k not in have_dests]
    ops += [
        EditDest(want, d) for k, d in want_dests.items() if k in have_dests and have_dests[k] != d
    ]
    ops += [DelDest(want, d) for k, d in have_dests.items() if k not in want_dests]
    return ops


# -- readback (pure over decoded pyroute2 messages) ----------------------------------
def parse_service(msg: Any) -> Service | None:
    """The Service in one IPVS_CMD_ATTR_SERVICE dump message.

    None for services pgvip never makes (fwmark, non-TCP, unknown scheduler): not ours.
    """
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE") if hasattr(msg, "get_attr") else None
    if svc is None:
        raise LoadBalancerError("IPVS dump message has no IPVS_CMD_ATTR_SERVICE")
    addr = svc.get_attr("IPVS_SVC_ATTR_ADDR")
    port = svc.get_attr("IPVS_SVC_ATTR_PORT")
    proto = svc.get_attr("IPVS_SVC_ATTR_PROTOCOL")
    sched = svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME") or ""
    timeout = svc.get_attr("IPVS_SVC_ATTR_TIMEOUT") or 0
    flags = (svc.get_attr("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
    fwmark = svc.get_attr("IPVS_SVC_ATTR_FWMARK") or 0
    if addr is None or not port or fwmark or proto != IPPROTO_TCP or sched not in SCHEDULERS:
        return None
    return Service(
        vip=ipaddress.ip_address(addr),
        port=port,
        protocol="tcp",
        scheduler=sched,
        persistence_timeout=timeout if flags & IP_VS_SVC_F_PERSISTENT else 0,
    )


def parse_dest(msg: Any) -> Dest:
    """A Dest from one IPVS_CMD_ATTR_DEST dump message, read from the attributes themselves."""
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST") if hasattr(msg, "get_attr") else None
    if dest is None:
        raise LoadBalancerError("IPVS dump message has no IPVS_CMD_ATTR_DEST")
    method = dest.get_attr("IPVS_DEST_ATTR_FWD_METHOD")
    # The kernel reports the method with other connection flags in the same word.
    forwarding = _FORWARDING_NAMES.get((method or 0) & 0x7)
    if forwarding is None:
        raise LoadBalancerError(f"IPVS dest has unknown forwarding method {method!r}")
    return Dest(
        address=ipaddress.ip_address(dest.get_attr("IPVS_DEST_ATTR_ADDR")),
        port=dest.get_attr("IPVS_DEST_ATTR_PORT"),
        weight=dest.get_attr("IPVS_DEST_ATTR_WEIGHT") or 0,
        forwarding=forwarding,
    )


def to_virtual_service(
    service: Service, dests: Sequence[Dest], default_forwarding: str
) -> VirtualService:
    """Fold the dump of one service into a VirtualService (one forwarding method for all)."""
    methods = {d.forwarding for d in dests}
    if len(methods) > 1:
        raise LoadBalancerError(
            f"IPVS service {service.vip}:{service.port} mixes forwarding methods "
            f"{', '.join(sorted(methods))}"
        )
    return VirtualService(
        vip=service.vip,
        port=service.port,
        backends=tuple(RealServer(d.address, d.port, d.weight) for d in dests),
        protocol=service.protocol,
        scheduler=service.scheduler,
        forwarding=methods.pop() if methods else default_forwarding,
        persistence_timeout=service.persistence_timeout,
    )


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
    ) -> None:
        self.interface = interface
        self.netns = netns
        self.manage_sysctls = manage_sysctls
        self.sysctls = SysctlKeeper(netns=netns, proc_root=proc_root)
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
        if self.manage_sysctls and desired.forwarding == "nat":
            wanted = forwarding_sysctls(self.interface, desired.vip.version)
            changed = await self.sysctls.ensure(wanted)
        ipvs = await self._open()
        try:
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
        await self.sysctls.restore()
