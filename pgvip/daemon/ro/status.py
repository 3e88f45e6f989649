"""What the RO director reports: `DirectorStatus` (the status API's `ro` object via
`ro_info()`) and its per-member `DirectorBackend` lines, built from the policy's explanation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pgvip.dataplane.balancer import VirtualService
from pgvip.dataplane.balancer.choice import explain_forwarding
from pgvip.patroni.cluster import ClusterView
from pgvip.policy.backends import BackendSet, BackendStatus, ProbeResult
from pgvip.status import RoInfo

__all__ = ["DirectorBackend", "DirectorStatus", "describe_backends", "director_reason"]


@dataclass(frozen=True)
class DirectorBackend:
    """One member as the status API shows it (`pgvip.status.BackendInfo`)."""

    member: str
    state: str  # active, draining, down, excluded, leader (BackendPolicy.explain())
    reason: str
    address: str | None
    port: int | None  # in the service, else the member's own from /cluster
    weight: int  # in the service (0 while draining or when not in it)
    healthy: bool  # it gets new connections
    lag: int | None  # bytes, from /cluster
    last_probe_at: float | None  # wall clock of the newest probe answer; None if not probed
    last_error: str | None  # the failed probe of the latest round; None if that round was good


@dataclass(frozen=True)
class DirectorStatus:
    active: bool  # this node is the RO director now
    dataplane: str
    dataplane_reason: str
    scheduler: str
    forwarding: str
    vip: str
    port: int
    reason: str  # why the backend set is what it is (or why nothing is programmed)
    fallback_active: bool
    healthy: int  # replicas getting new connections
    total: int  # replicas in /cluster
    backends: tuple[DirectorBackend, ...]
    applied: VirtualService | None  # the last service applied successfully
    last_apply_at: float | None  # wall clock
    last_apply_error: str | None  # None once an apply succeeds again
    cluster_error: str | None  # None while /cluster answers well
    cycles: int
    applies: int
    apply_errors: int
    clears: int
    clear_errors: int
    cluster_errors: int
    probe_failures: int

    def ro_info(self) -> RoInfo:
        """The status API's `ro` object."""
        return {
            "dataplane": self.dataplane,
            "dataplane_reason": self.dataplane_reason,
            "forwarding_reason": explain_forwarding(self.dataplane, self.forwarding),
            "directing": self.active,
            "port": self.port,
            "scheduler": self.scheduler,
            "forwarding": self.forwarding,
            "fallback_active": self.fallback_active,
            "reason": self.reason,
            "healthy": self.healthy,
            "total": self.total,
            "apply_errors": self.apply_errors,
            "backends": [
                {
                    "member": b.member,
                    "address": b.address,
                    "port": b.port,
                    "state": b.state,
                    "healthy": b.healthy,
                    "weight": b.weight,
                    "lag": b.lag,
                    "last_probe_at": b.last_probe_at,
                    "last_error": b.last_error,
                    "reason": b.reason,
                }
                for b in self.backends
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (addresses as strings)."""
        out = asdict(self)
        out["backends"] = [asdict(b) for b in self.backends]
        applied = self.applied
        out["applied"] = (
            None
            if applied is None
            else {
                "vip": str(applied.vip),
                "port": applied.port,
                "scheduler": applied.scheduler,
                "forwarding": applied.forwarding,
                "backends": [
                    {"address": str(rs.address), "port": rs.port, "weight": rs.weight}
                    for rs in applied.backends
                ],
            }
        )
        return out


def director_reason(
    active: bool, current: BackendSet | None, cluster_error: str | None, *, warming: bool
) -> str:
    """Why the director is where it is, for the status API."""
    if not active:
        return "not the RO director"
    if current is None:
        return cluster_error or "starting: no /cluster answer yet"
    return f"warming up: {current.reason}" if warming else current.reason


def describe_backends(
    explained: Iterable[BackendStatus],
    view: ClusterView | None,
    current: BackendSet | None,
    latest: Mapping[str, list[ProbeResult]],
    *,
    mono_now: float,
    wall_now: float,
) -> tuple[DirectorBackend, ...]:
    """One DirectorBackend per explained member; probe times turned from monotonic to wall."""
    in_service = {b.member: b for b in current.backends} if current else {}
    infos = []
    for line in explained:
        member = view.member(line.member) if view else None
        backend = in_service.get(line.member)
        results = latest.get(line.member, [])
        failed = [r.reason for r in results if not r.ok]
        probed_at = max((r.at for r in results), default=None)
        infos.append(
            DirectorBackend(
                member=line.member,
                state=line.state,
                reason=line.reason,
                address=line.address,
                port=backend.port if backend else (member.port if member else None),
                weight=backend.weight if backend else 0,
                healthy=line.state == "active",
                lag=member.lag if member else None,
                last_probe_at=None if probed_at is None else wall_now - (mono_now - probed_at),
                last_error=failed[0] if failed else None,
            )
        )
    return tuple(infos)
