"""The RO load-balancer interface: desired-state values, the `LoadBalancer` protocol, its error.

Two implementations sit behind `LoadBalancer`: IPVS (`balancer.ipvs`) and nftables numgen DNAT
(`balancer.nftables`), picked by `balancer.choice.choose_dataplane`. Only the elected director
programs its balancer; every implementation is idempotent and reads back what the kernel really
holds, so a reconcile loop can heal drift. This module imports no implementation, so each of
them (and `dataplane.sysctl`) can import it without a cycle.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, runtime_checkable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# keepalived's lvs_sched / lvs_method vocabulary.
SCHEDULERS = frozenset({"rr", "wrr", "lc", "wlc", "sh", "mh"})
FORWARDING_METHODS = frozenset({"nat", "dr", "tun"})
PROTOCOLS = frozenset({"tcp"})


class LoadBalancerError(RuntimeError):
    """The balancer cannot be chosen, validated, programmed or read back; the text says why."""


@dataclass(frozen=True)
class RealServer:
    address: IPAddress
    port: int
    weight: int = 1  # 0 = quiesced: no new connections, existing ones keep flowing


@dataclass(frozen=True)
class VirtualService:
    """What the director should balance. Backends are kept sorted, so equality ignores order."""

    vip: IPAddress
    port: int
    backends: tuple[RealServer, ...] = ()
    protocol: str = "tcp"
    scheduler: str = "rr"
    forwarding: str = "nat"
    persistence_timeout: int = 0  # seconds; 0 = no persistence

    def __post_init__(self) -> None:
        if not isinstance(self.vip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise LoadBalancerError(f"vip must be an IP address, got {self.vip!r}")
        _check_port("VIP port", self.port)
        if self.protocol not in PROTOCOLS:
            raise LoadBalancerError(f"protocol {self.protocol!r} is not supported; use 'tcp'")
        check_names(self.scheduler, self.forwarding)
        if self.persistence_timeout < 0:
            raise LoadBalancerError(
                f"persistence_timeout must be >= 0 seconds, got {self.persistence_timeout}"
            )
        seen: set[tuple[IPAddress, int]] = set()
        for rs in self.backends:
            if not isinstance(rs, RealServer):
                raise LoadBalancerError(f"backends must be RealServer values, got {rs!r}")
            if rs.address.version != self.vip.version:
                raise LoadBalancerError(
                    f"backend {rs.address} is IPv{rs.address.version} but the VIP {self.vip} "
                    f"is IPv{self.vip.version}"
                )
            _check_port(f"backend {rs.address} port", rs.port)
            if not 0 <= rs.weight <= 65535:
                raise LoadBalancerError(f"backend {rs.address} weight must be 0-65535")
            if (rs.address, rs.port) in seen:
                raise LoadBalancerError(f"backend {rs.address}:{rs.port} is listed twice")
            seen.add((rs.address, rs.port))
        ordered = tuple(sorted(self.backends, key=lambda r: (int(r.address), r.port)))
        object.__setattr__(self, "backends", ordered)

    @property
    def family(self) -> Literal[4, 6]:
        return 4 if self.vip.version == 4 else 6


class _HasBackendFields(Protocol):
    @property
    def address(self) -> IPAddress: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...


def virtual_service(
    vip: IPAddress | str,
    port: int,
    backends: Iterable[_HasBackendFields],
    *,
    scheduler: str = "rr",
    forwarding: str = "nat",
    persistence_timeout: int = 0,
) -> VirtualService:
    """A VirtualService from anything with address/port/weight (e.g. the policy's `Backend`)."""
    return VirtualService(
        vip=ipaddress.ip_address(vip) if isinstance(vip, str) else vip,
        port=port,
        backends=tuple(RealServer(b.address, b.port, b.weight) for b in backends),
        scheduler=scheduler,
        forwarding=forwarding,
        persistence_timeout=persistence_timeout,
    )


@runtime_checkable
class LoadBalancer(Protocol):
    """One RO virtual service on this node (optionally inside network namespace `netns`).

    Implementations are constructed as `Impl(interface=..., netns=..., service=(vip, port),
    instance=...)`: `interface` holds the VIP, `service` names the service a previous run may
    have left, `instance` (`instance.name`) names its nftables table and sysctl claims.
    """

    name: ClassVar[str]

    async def apply(self, desired: VirtualService) -> bool:
        """Make the kernel hold `desired`; idempotent. True if anything had to change."""
        ...

    async def actual(self) -> VirtualService | None:
        """What the kernel holds now (None: no pgvip service at all)."""
        ...

    async def clear(self) -> None:
        """Remove everything pgvip programmed; idempotent."""
        ...

    def check(self, scheduler: str, forwarding: str, persistence_timeout: int) -> None:
        """Raise LoadBalancerError if this dataplane cannot do what the config asks (the
        class's own check, also asked of a running one before a reload retunes it)."""
        ...


class LoadBalancerClass(Protocol):
    """The class side of a LoadBalancer, as `choose_dataplane` returns it."""

    name: str

    def __call__(
        self,
        *,
        interface: str | None = ...,
        netns: str | None = ...,
        service: tuple[IPAddress, int] | None = ...,
        instance: str | None = ...,
    ) -> LoadBalancer: ...

    def check(self, scheduler: str, forwarding: str, persistence_timeout: int) -> None:
        """Raise LoadBalancerError if this dataplane cannot do what the config asks."""
        ...


def check_names(scheduler: str, forwarding: str) -> None:
    if scheduler not in SCHEDULERS:
        raise LoadBalancerError(
            f"unknown scheduler {scheduler!r}; use one of {', '.join(sorted(SCHEDULERS))}"
        )
    if forwarding not in FORWARDING_METHODS:
        raise LoadBalancerError(
            f"unknown forwarding method {forwarding!r}; "
            f"use one of {', '.join(sorted(FORWARDING_METHODS))}"
        )


def _check_port(what: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LoadBalancerError(f"{what} must be 1-65535, got {port!r}")
