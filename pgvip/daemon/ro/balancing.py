"""The RO engine's side of the load balancer: apply a desired service (logging a new set, a
repaired drift, a failure once per change of error) and clear it, with the counters the
status API shows. The Director decides when; this module does it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, cast

from pgvip.config import SCHEMA, RoConfig
from pgvip.daemon.log_throttle import ErrorLogThrottle
from pgvip.dataplane.balancer import (
    IPAddress,
    LoadBalancer,
    LoadBalancerError,
    VirtualService,
    virtual_service,
)
from pgvip.policy.backends import BackendSet, BackendSettings

__all__ = [
    "RETUNABLE", "BalancerDriver", "RetuneRefused", "backend_settings", "desired_service",
]  # fmt: skip

# The [ro] settings a running director takes on a reload: the schema's rows marked hot (the
# service's scheduler and persistence, the backend policy; test_config_hot pins them).
RETUNABLE = tuple(s.key for s in SCHEMA if s.section == "ro" and s.hot)


class RetuneRefused(ValueError):
    """A reload's [ro] cannot be taken by the running director: the engine is rebuilt."""


def desired_service(c: RoConfig, vip: IPAddress, backend_set: BackendSet) -> VirtualService:
    """The RO virtual service that programs `backend_set`."""
    return virtual_service(
        vip, c.port, backend_set.backends, scheduler=c.scheduler, forwarding=c.forwarding,
        persistence_timeout=c.persistence_timeout,
    )  # fmt: skip


def backend_settings(c: RoConfig, vip: IPAddress) -> BackendSettings:
    """The backend policy's settings from the [ro] section."""
    return BackendSettings(
        max_lag=c.max_lag,
        rise=c.rise,
        fall=c.fall,
        drain_timeout=c.drain_timeout,
        fallback=cast(Literal["primary", "none"], c.fallback),
        include_primary=c.include_primary,
        # NAT rewrites the port, so each member's own; DR and TUN cannot.
        port=None if c.forwarding == "nat" else c.port,
        family=cast(Literal[4, 6], vip.version),
    )


class BalancerDriver:
    def __init__(self, balancer: LoadBalancer, *, log: Any, clock: Callable[[], float]) -> None:
        self.balancer = balancer
        self._log = log
        self._clock = clock
        self._throttle = ErrorLogThrottle()
        self.applied: VirtualService | None = None  # the last service applied successfully
        self.applied_at_mono: float | None = None
        self.apply_failed = False  # the last apply raised; kept across terms until one works
        self.cleared = False  # the last operation was a successful clear: the balancer is empty
        self.applies = 0
        self.apply_errors = 0
        self.clears = 0
        self.clear_errors = 0
        self.last_apply_error: str | None = None
        self.last_apply_at: float | None = None  # wall clock
        self._cut = 0  # the balancer's count of connections ended after a drain, last seen

    @property
    def name(self) -> str:
        return self.balancer.name

    def counters(self) -> dict[str, Any]:
        """Its part of the director's status (DirectorStatus fields)."""
        return {
            "dataplane": self.name,
            "last_apply_at": self.last_apply_at,
            "last_apply_error": self.last_apply_error,
            "applies": self.applies,
            "apply_errors": self.apply_errors,
            "clears": self.clears,
            "clear_errors": self.clear_errors,
        }

    def retune_check(self, running: RoConfig, new: RoConfig) -> list[str]:
        """The RETUNABLE keys `new` changes; RetuneRefused if it changes any other [ro] key,
        or asks what this dataplane cannot do."""
        rest = replace(new, **{k: getattr(running, k) for k in RETUNABLE})
        if rest != running:
            raise RetuneRefused("only the hot [ro] settings can change under a running director")
        try:
            self.balancer.check(new.scheduler, new.forwarding, new.persistence_timeout)
        except LoadBalancerError as exc:
            raise RetuneRefused(f"the running {self.name} dataplane: {exc}") from exc
        return sorted(k for k in RETUNABLE if getattr(new, k) != getattr(running, k))

    def due(self, desired: VirtualService, now: float, reapply_interval: float) -> bool:
        """Apply now: the service changed, the last apply failed, or it is time to re-apply."""
        return (
            desired != self.applied
            or self.apply_failed
            or self.applied_at_mono is None
            or now - self.applied_at_mono >= reapply_interval
        )

    async def apply(self, desired: VirtualService, backend_set: BackendSet) -> None:
        try:
            changed = await self.balancer.apply(desired)
        except Exception as exc:
            self.apply_errors += 1
            self.apply_failed = True
            self.cleared = False  # it may have got halfway
            self.last_apply_error = f"{type(exc).__name__}: {exc}"
            decision = self._throttle.observe("error", self.last_apply_error)
            if decision.log:
                self._log.error(
                    "RO balancer apply failed; retrying next poll",
                    dataplane=self.name,
                    error=self.last_apply_error,
                    repeats_of_previous=decision.suppressed,
                )
            return
        if self.apply_failed:
            self._log.info("RO balancer applied again", dataplane=self.name)
            self._throttle.observe("ok", "")
        self.applies += 1
        self.cleared = False
        self.apply_failed = False
        self.last_apply_error = None
        self.last_apply_at = time.time()
        self.applied_at_mono = self._clock()
        previous, self.applied = self.applied, desired
        cut = getattr(self.balancer, "cut", 0)  # nftables counts them; IPVS expires its own
        if cut > self._cut:
            self._log.info(
                "RO: ended the remaining connections of backends whose drain is over",
                connections=cut - self._cut,
                dataplane=self.name,
            )
            self._cut = cut
        if desired != previous:
            self._log.info(
                "RO backends applied",
                reason=backend_set.reason,
                backends=[
                    f"{b.member}={_endpoint(b.address, b.port)}/{b.weight}"
                    for b in backend_set.backends
                ],
                fallback=backend_set.fallback_active,
                dataplane=self.name,
            )
        elif changed:
            self._log.warning(
                "RO balancer drift repaired", dataplane=self.name, vip=str(desired.vip)
            )

    async def clear(self, why: str) -> bool:
        """Empty the balancer; False (logged, counted) if it raised."""
        try:
            await self.balancer.clear()
        except Exception as exc:
            self.clear_errors += 1
            self._log.error(
                "RO balancer clear failed; retrying",
                dataplane=self.name,
                why=why,
                error=f"{type(exc).__name__}: {exc}",
            )
            return False
        self.clears += 1
        self.cleared = True
        self.applied = None
        self.applied_at_mono = None
        return True


def _endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
