"""The IPVS model (pure): services, dests, the minimal-diff plan between two states, and readback.

`plan(actual, desired)` turns two VirtualServices into the fewest IPVS operations. Readback parses
the IPVS_*_ATTR_* keys of a dump itself, because pyroute2's `from_message()` keeps class defaults
for the forwarding method, timeout and weight. `ipvs` sends the operations.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pgvip.dataplane.balancer import (
    SCHEDULERS,
    IPAddress,
    LoadBalancerError,
    RealServer,
    VirtualService,
)

# IPVS_DEST_ATTR_FWD_METHOD values (IP_VS_CONN_F_MASQ / _TUNNEL / _DROUTE).
FORWARDING_CODES = {"nat": 0, "tun": 2, "dr": 3}
_FORWARDING_NAMES = {code: name for name, code in FORWARDING_CODES.items()}
IP_VS_SVC_F_PERSISTENT = 0x0001
IPPROTO_TCP = socket.IPPROTO_TCP


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
