"""The RO VIP's backend set: which members get read-only connections, with what weight.

Pure and clock-free: `BackendPolicy.update(view, probes, now)` turns the last `/cluster` view
and per-member probe results into the desired `BackendSet`, keeping rise/fall hysteresis and
drain timers per backend.

Rules, in order:

* Only replicas (roles replica, sync_standby, quorum_standby) in state running/streaming, whose
  host is an IP address of the configured family and that are not tagged `noloadbalance`, can
  serve; anything else is excluded at once.
* A replica becomes healthy after `rise` consecutive good observations and unhealthy after
  `fall` consecutive bad ones. An observation is every update that brings a new probe result;
  it is good when the newest result of every probe kind is ok and no lag (from a probe or from
  `/cluster`) exceeds `max_lag`. Replicas start unhealthy.
* A backend that leaves the active set for any reason (unhealthy, excluded, gone from
  `/cluster`, fallback over) is kept at weight 0 with `draining=True` for `drain_timeout`
  seconds, then removed; coming back healthy meanwhile makes it active again.
* With no healthy replica, `fallback="primary"` serves from the leader, `"none"` serves nothing.
  `include_primary=True` always adds the leader. The leader counts only if it is running, has
  an IP host and is not tagged `noloadbalance`.
* Weight is 1, or the member's Patroni tag `pgvip_weight` (an integer 0..100; 0 excludes the
  member, an invalid value is ignored and reported by `explain()`). The tag is namespaced so it
  cannot collide with other tools' tags.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from pgvip.patroni.cluster import ClusterView, Member

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SERVING_STATES = frozenset({"running", "streaming"})
WEIGHT_TAG = "pgvip_weight"
MAX_WEIGHT = 100
DEFAULT_PORT = 5432


class BackendPolicyError(ValueError):
    """The RO backend settings are invalid (rise/fall, drain timeout, fallback, ...)."""


@dataclass(frozen=True)
class ProbeResult:
    """One health answer about one member, e.g. its own `/replica?lag=16MB` or a SQL probe."""

    member: str
    ok: bool
    reason: str  # e.g. "/replica?lag=16MB 200", "/replica 503", "timeout", "SQL: refused"
    at: float  # monotonic time of the answer; a result is counted once per distinct `at`
    lag: int | None = None  # bytes, if the probe learnt it
    kind: str = "http"  # results of different kinds must all be ok for a good observation
    # A failure that is an answer, not a doubt: the member itself said no (its /replica 503)
    # or nothing listens (connection refused). It removes a healthy backend at once instead
    # of after `fall`, since every connection sent there meanwhile fails. Timeouts and garbage
    # are doubts and still need `fall`.
    definitive: bool = False
    # No answer at all within the probe's deadline (a gone host looks like this; a refusal or
    # an error reply does not).
    timed_out: bool = False


@dataclass(frozen=True)
class BackendSettings:
    max_lag: int | None = None  # bytes; None = no lag limit
    rise: int = 2
    fall: int = 3
    drain_timeout: float = 30.0  # seconds at weight 0 before a departing backend is removed
    fallback: Literal["primary", "none"] = "primary"
    include_primary: bool = False
    port: int | None = None  # None: each member's port from /cluster (DEFAULT_PORT if absent)
    family: Literal[4, 6] | None = None  # only members whose host is of this IP version
    stale_after: float | None = None  # a healthy backend with no new probe this long goes down

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise BackendPolicyError(f"rise and fall must be >= 1, got {self.rise}/{self.fall}")
        if self.drain_timeout < 0:
            raise BackendPolicyError(f"drain_timeout must be >= 0, got {self.drain_timeout}")
        if self.fallback not in ("primary", "none"):
            raise BackendPolicyError(f"fallback must be 'primary' or 'none', got {self.fallback!r}")
        if self.max_lag is not None and self.max_lag < 0:
            raise BackendPolicyError(f"max_lag must be >= 0 bytes, got {self.max_lag}")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise BackendPolicyError(f"port must be 1-65535, got {self.port}")
        if self.family not in (None, 4, 6):
            raise BackendPolicyError(f"family must be 4, 6 or None, got {self.family!r}")
        if self.stale_after is not None and self.stale_after <= 0:
            raise BackendPolicyError(f"stale_after must be > 0 seconds, got {self.stale_after}")


@dataclass(frozen=True)
class Backend:
    address: IPAddress
    port: int
    weight: int
    member: str
    draining: bool = False

    @property
    def key(self) -> tuple[IPAddress, int]:
        return (self.address, self.port)


@dataclass(frozen=True)
class BackendSet:
    backends: tuple[Backend, ...]  # active ones first (sorted), then draining ones at weight 0
    reason: str
    fallback_active: bool = False

    @property
    def active(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if not b.draining)


@dataclass(frozen=True)
class BackendStatus:
    """One line of `BackendPolicy.explain()`."""

    member: str
    state: Literal["active", "draining", "down", "excluded", "leader"]
    reason: str
    address: str | None = None

    def __str__(self) -> str:
        where = f" ({self.address})" if self.address else ""
        return f"{self.member}{where}: {self.state}: {self.reason}"


@dataclass
class _Health:
    healthy: bool = False
    successes: int = 0
    failures: int = 0
    latest: dict[str, ProbeResult] = field(default_factory=dict)
    last_observed_at: float | None = None
    reason: str = "no probe result yet"

    def reset(self, reason: str) -> None:
        # `latest` survives, so results already counted are not counted again.
        self.healthy = False
        self.successes = self.failures = 0
        self.reason = reason


class BackendPolicy:
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._health: dict[str, _Health] = {}
        self._active: dict[tuple[IPAddress, int], Backend] = {}
        self._draining: dict[tuple[IPAddress, int], tuple[Backend, float]] = {}
        self._status: dict[str, BackendStatus] = {}
        self._last: BackendSet = BackendSet((), "no update yet")

    @property
    def current(self) -> BackendSet:
        return self._last

    def update(self, view: ClusterView, probes: Iterable[ProbeResult], now: float) -> BackendSet:
        s = self.settings
        names = {m.name for m in view.members}
        for gone in set(self._health) - names:
            # Coming back later means rising again; its old results stay counted.
            self._health[gone].reset("not in /cluster")

        by_member: dict[str, list[ProbeResult]] = {}
        for p in probes:
            by_member.setdefault(p.member, []).append(p)

        status: dict[str, BackendStatus] = {}
        active: dict[tuple[IPAddress, int], Backend] = {}
        for m in view.members:
            health = self._health.setdefault(m.name, _Health())
            if m.is_leader:
                # Judged below, only as a fallback / include_primary target; if it is
                # demoted later it must rise again like any new replica.
                health.reset("leader")
                _absorb(health, by_member.get(m.name, ()))
                continue
            candidate, why_not = self._candidate(m)
            if candidate is None:
                # Structural facts (role, state, tags, address) act at once, like a 503.
                health.reset(why_not)
                _absorb(health, by_member.get(m.name, ()))
                status[m.name] = BackendStatus(m.name, "excluded", why_not, m.host)
                continue
            self._observe(m, health, by_member.get(m.name, ()), now)
            if health.healthy and candidate.key in active:
                other = active[candidate.key].member
                health.reason = f"same address as {other}: {_fmt(candidate)}"
                status[m.name] = BackendStatus(m.name, "excluded", health.reason, m.host)
            elif health.healthy:
                active[candidate.key] = candidate
                reason = f"{health.reason}; {why_not}" if why_not else health.reason
                status[m.name] = BackendStatus(m.name, "active", reason, m.host)
            else:
                reason = f"{health.reason}; {why_not}" if why_not else health.reason
                status[m.name] = BackendStatus(m.name, "down", reason, m.host)

        replicas = sorted(b.member for b in active.values())
        fallback_active = False
        leader = view.leader_member
        leader_backend, leader_why = self._leader_backend(leader)
        if leader is not None:
            status[leader.name] = BackendStatus(leader.name, "leader", leader_why, leader.host)

        if replicas:
            reason = f"{len(replicas)} healthy replica(s): {', '.join(replicas)}"
        elif s.fallback == "primary" and leader_backend is not None:
            reason = f"no healthy replica; fallback to primary {leader_backend.member}"
            fallback_active = True
        elif s.fallback == "primary":
            reason = f"no healthy replica and no usable primary ({leader_why})"
        elif s.include_primary and leader_backend is not None:
            reason = "no healthy replica (fallback 'none')"
        else:
            reason = "no healthy replica; fallback 'none': no backend"
        if leader_backend is not None and (fallback_active or s.include_primary):
            if leader_backend.key not in active:
                active[leader_backend.key] = leader_backend
                assert leader is not None
                why = "fallback" if fallback_active else "include_primary"
                status[leader.name] = BackendStatus(leader.name, "active", why, leader.host)
            if s.include_primary and not fallback_active:
                reason += f"; primary {leader_backend.member} included"

        self._drain(active, now)
        for b, since in self._draining.values():
            left = s.drain_timeout - (now - since)
            prior = status.get(b.member)
            why = f"{prior.reason}; " if prior and prior.state != "active" else ""
            status[b.member] = BackendStatus(
                b.member, "draining", f"{why}weight 0, removed in {left:.1f} s", str(b.address)
            )
        if self._draining:
            leaving = sorted(b.member for b, _ in self._draining.values())
            reason += f"; draining {', '.join(leaving)}"

        self._active = active
        self._status = status
        backends = tuple(sorted(active.values(), key=_order)) + tuple(
            sorted((b for b, _ in self._draining.values()), key=_order)
        )
        self._last = BackendSet(backends, reason, fallback_active)
        return self._last

    def explain(self) -> tuple[BackendStatus, ...]:
        """Why each member is (not) in the set, as of the last update."""
        return tuple(self._status[name] for name in sorted(self._status))

    # -- internals ---------------------------------------------------------
    def _candidate(self, m: Member) -> tuple[Backend | None, str]:
        if not m.is_replica:
            return None, f"role {m.role!r} is not a replica role"
        if m.state not in SERVING_STATES:
            return None, f"state {m.state!r} is not running/streaming"
        return self._backend_for(m)

    def _backend_for(self, m: Member) -> tuple[Backend | None, str]:
        if m.noloadbalance:
            return None, "tagged noloadbalance"
        if m.host is None:
            return None, "no host in /cluster (postgresql.connect_address unset?)"
        try:
            address = ipaddress.ip_address(m.host)
        except ValueError:
            return None, f"host {m.host!r} is not an IP address (the balancer needs addresses)"
        if self.settings.family is not None and address.version != self.settings.family:
            return None, f"host {m.host} is not IPv{self.settings.family} like the RO VIP"
        weight, weight_note = _weight(m)
        if weight == 0:
            return None, f"tag {WEIGHT_TAG}=0"
        port = self.settings.port or m.port or DEFAULT_PORT
        return Backend(address, port, weight, m.name), weight_note

    def _leader_backend(self, leader: Member | None) -> tuple[Backend | None, str]:
        if leader is None:
            return None, "no leader in /cluster"
        if leader.state != "running":
            return None, f"leader state {leader.state!r} is not running"
        backend, why = self._backend_for(leader)
        if backend is None:
            return None, why
        return backend, "leader, not in the RO pool"

    def _observe(
        self, m: Member, health: _Health, results: Iterable[ProbeResult], now: float
    ) -> None:
        s = self.settings
        if not _absorb(health, results):
            last = health.last_observed_at
            if (
                health.healthy
                and s.stale_after is not None
                and last is not None
                and now - last > s.stale_after
            ):
                health.reset(f"no new probe result for {now - last:.1f} s (stale_after)")
            return

        health.last_observed_at = max(p.at for p in health.latest.values())
        bad = _first_problem(m, health.latest.values(), s.max_lag)
        if bad is None:
            health.successes += 1
            health.failures = 0
            summary = " + ".join(p.reason for p in _by_kind(health.latest.values()))
            if health.healthy:
                health.reason = summary
            elif health.successes >= s.rise:
                health.healthy = True
                health.reason = f"{summary} x{health.successes} (rise {s.rise})"
            else:
                health.reason = f"{summary} x{health.successes} of rise {s.rise}"
        else:
            health.failures += 1
            health.successes = 0
            if not health.healthy:
                health.reason = bad
            elif _definitive(health.latest.values()):
                health.healthy = False
                health.reason = f"{bad} (a definite no: out at once, not after fall {s.fall})"
            elif health.failures >= s.fall:
                health.healthy = False
                health.reason = f"{bad} x{health.failures} (fall {s.fall})"
            else:
                health.reason = f"{bad} x{health.failures} of fall {s.fall}"

    def _drain(self, active: dict[tuple[IPAddress, int], Backend], now: float) -> None:
        timeout = self.settings.drain_timeout
        for key, old in self._active.items():
            if key not in active and key not in self._draining and timeout > 0:
                self._draining[key] = (replace(old, weight=0, draining=True), now)
        for key in list(self._draining):
            _, since = self._draining[key]
            if key in active or now - since >= timeout:
                del self._draining[key]


def _absorb(health: _Health, results: Iterable[ProbeResult]) -> bool:
    """Record results newer than those seen; True if there was any (a new observation)."""
    fresh = False
    for p in sorted(results, key=lambda r: r.at):
        known = health.latest.get(p.kind)
        if known is None or p.at > known.at:
            health.latest[p.kind] = p
            fresh = True
    return fresh


def _weight(m: Member) -> tuple[int, str]:
    raw = m.tags.get(WEIGHT_TAG)
    if raw is None:
        return 1, ""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        return 1, f"ignored tag {WEIGHT_TAG}={raw!r} (not an integer)"
    try:
        value = int(raw)
    except ValueError:
        return 1, f"ignored tag {WEIGHT_TAG}={raw!r} (not an integer)"
    if not 0 <= value <= MAX_WEIGHT:
        return 1, f"ignored tag {WEIGHT_TAG}={raw!r} (must be 0..{MAX_WEIGHT})"
    return value, ""


def _by_kind(results: Iterable[ProbeResult]) -> list[ProbeResult]:
    return sorted(results, key=lambda p: p.kind)


def _definitive(latest: Iterable[ProbeResult]) -> bool:
    return any(not p.ok and p.definitive for p in latest)


def _first_problem(m: Member, latest: Iterable[ProbeResult], max_lag: int | None) -> str | None:
    for p in _by_kind(latest):
        if not p.ok:
            return p.reason
        if max_lag is not None and p.lag is not None and p.lag > max_lag:
            return f"lag {p.lag} B > max_lag {max_lag} B ({p.reason})"
    if max_lag is not None and m.lag is not None and m.lag > max_lag:
        return f"lag {m.lag} B > max_lag {max_lag} B (/cluster)"
    return None


def _order(b: Backend) -> tuple[int, int, int, str]:
    # IPv4Address and IPv6Address do not compare with each other.
    return (b.address.version, int(b.address), b.port, b.member)


def _fmt(b: Backend) -> str:
    host = f"[{b.address}]" if b.address.version == 6 else str(b.address)
    return f"{host}:{b.port}"
