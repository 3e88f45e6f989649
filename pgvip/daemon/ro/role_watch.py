"""Feeds the RO VRRP instance from the local `/patroni`: eligibility (Patroni reachable and its
PostgreSQL running, with rise/fall) and priority (ro.priority_leader or ro.priority_replica).

`/patroni` keeps saying "running" for about a second after its PostgreSQL stopped accepting
connections. So when the director's port watch finds this node's own PostgreSQL refusing
(`local_refused`), the node is ineligible at once and resigns the RO VIP, and it stays
ineligible, whatever `/patroni` says, until a connect to that port succeeds again."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from pgvip.daemon.cadence import Cadence
from pgvip.daemon.poll_log import PollLog
from pgvip.daemon.ro.port_check import check_port
from pgvip.patroni.roles import is_status_leader
from pgvip.patroni.verdict import (
    Observation,
    PatroniError,
    PatroniStatus,
    PatroniUnavailable,
    Verdict,
)
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.ranges import require_int
from pgvip.vrrp.events import EligibilityChanged, Event, PriorityChanged

__all__ = ["RUNNING_STATES", "RoleWatch", "RoleWatchError", "observe_status"]

# /patroni reports PostgreSQL's state as Patroni sees it; "running" is the serving one.
RUNNING_STATES = frozenset({"running"})


class RoleWatchError(ValueError):
    """RoleWatch was built with impossible settings (interval, priorities)."""


def observe_status(status: PatroniStatus | PatroniError, at: float, latency: float) -> Observation:
    """A `/patroni` answer (or the error asking it) as an RO eligibility observation.

    YES: Patroni answered and its PostgreSQL is running (any role). NO: it answered with
    another state. UNKNOWN: no usable answer.
    """
    if isinstance(status, PatroniUnavailable):
        return Observation(Verdict.UNKNOWN, status.reason, status.cause, at, latency)
    if isinstance(status, PatroniError):
        return Observation(Verdict.UNKNOWN, str(status), "invalid", at, latency)
    if status.state in RUNNING_STATES:
        reason = f"/patroni {status.role}, {status.state}"
        return Observation(Verdict.YES, reason, "ok", at, latency)
    reason = f"/patroni {status.role}, state {status.state!r} is not running"
    return Observation(Verdict.NO, reason, "not_running", at, latency)


class RoleWatch:
    """Polls `/patroni` every `interval` seconds and feeds PriorityChanged + EligibilityChanged.

    A priority change is fed before the eligibility it comes with, so an instance that
    becomes eligible on the same answer already uses the right Skew_Time. While Patroni does
    not answer, the last known role's priority stands.
    """

    def __init__(
        self,
        status: Callable[[], Awaitable[PatroniStatus]],
        policy: EligibilityPolicy,
        *,
        priority_leader: int,
        priority_replica: int,
        interval: float,
        feed: Callable[[Event], None],
        log: Any,
        on_poll: Callable[[Observation], None] = lambda obs: None,
        port_timeout: float = 1.0,
        instance: str = "ro",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval > 0:
            raise RoleWatchError(f"interval must be > 0 seconds, got {interval}")
        for name, value in (
            ("priority_leader", priority_leader),
            ("priority_replica", priority_replica),
        ):
            require_int(name, value, 1, 254, error=RoleWatchError)
        self._status = status
        self.policy = policy
        self.priority_leader = priority_leader
        self.priority_replica = priority_replica
        self._interval = interval
        self._feed = feed
        self._log = log
        self._clock = clock
        self._on_poll = on_poll
        self.instance = instance  # as PatroniWatch: the status API finds a watch by it
        self._first = True
        self.role: str | None = None  # the last role Patroni reported
        self.priority: int | None = None  # the last priority fed (None: none yet)
        self.last: Observation | None = None
        self.last_status: PatroniStatus | None = None
        self.status_at: float | None = None  # when /patroni last answered (monotonic)
        self._poll_log = PollLog(
            log, prefix="RO role watch: ", definite=("ok", "not_running", "port_refused")
        )
        self.polls = 0
        self._port_timeout = port_timeout
        self.port_down: tuple[str, int] | None = None  # our PostgreSQL refused: (host, port)

    @property
    def errors(self) -> dict[str, int]:
        return self._poll_log.errors

    @property
    def eligible(self) -> bool:
        return self.policy.eligible

    def priority_for(self, role: str) -> int:
        return self.priority_leader if is_status_leader(role) else self.priority_replica

    async def run(self) -> None:
        cadence = Cadence(self._interval, self._clock)
        while True:
            await self.poll_once()
            await cadence.wait()

    async def poll_once(self) -> Observation:
        """Ask `/patroni` once and feed what changed; returns the observation."""
        started = self._clock()
        answer: PatroniStatus | PatroniError
        try:
            answer = await self._status()
        except PatroniError as exc:
            answer = exc
        done = self._clock()
        obs = observe_status(answer, done, max(0.0, done - started))
        if obs.verdict is Verdict.YES and self.port_down is not None:
            obs = await self._recheck_port(obs)
        self.polls += 1
        self.last = obs
        self._on_poll(obs)
        # Successes differ by role/state only, so a role change is logged by _on_role instead.
        self._poll_log.record(obs, obs.reason if obs.verdict is Verdict.UNKNOWN else obs.cause)
        if isinstance(answer, PatroniStatus):
            self.last_status = answer
            self.status_at = done
            self._on_role(answer.role)
        decision = self.policy.observe(obs)
        if decision.changed or self._first:
            self._feed(EligibilityChanged(eligible=decision.eligible, reason=decision.reason))
            self._first = False
        return obs

    def member_name(self) -> str | None:
        """This node's Patroni member name, as `/patroni` last said (None: not yet)."""
        return self.last_status.name if self.last_status is not None else None

    def member_refused(self, member: str, host: str, port: int, reason: str) -> None:
        """The director's port watch saw `member` refuse; it matters here if that is us."""
        if self.last_status is not None and self.last_status.name == member:
            self.local_refused(host, port, reason)

    def local_refused(self, host: str, port: int, reason: str) -> None:
        """The director's port watch saw this node's own PostgreSQL refuse: ineligible now."""
        first = self.port_down is None
        self.port_down = (host, port)
        obs = Observation(Verdict.NO, reason, "port_refused", self._clock(), 0.0)
        if first:
            self._log.warning(
                "RO: this node's PostgreSQL refuses connections: resigning the RO VIP until "
                "it accepts again",
                reason=reason,
            )
        decision = self.policy.observe(obs)
        self.last = obs
        if decision.changed:
            self._feed(EligibilityChanged(eligible=decision.eligible, reason=decision.reason))

    async def _recheck_port(self, obs: Observation) -> Observation:
        """After a local refusal, "running" from `/patroni` counts only once the port accepts."""
        assert self.port_down is not None
        host, port = self.port_down
        result = await check_port(
            "local", host, port, timeout=self._port_timeout, clock=self._clock
        )
        if result.ok:
            self._log.info(
                "RO: this node's PostgreSQL accepts connections again", reason=result.reason
            )
            self.port_down = None
            return obs
        # Not back yet (refused, or a timeout: no proof it recovered either).
        return Observation(Verdict.NO, f"{obs.reason}, but {result.reason}", "port_refused",
                           obs.at, obs.latency)  # fmt: skip

    def _on_role(self, role: str) -> None:
        wanted = self.priority_for(role)
        previous_role, self.role = self.role, role
        if wanted == self.priority:
            return
        kind = "leader" if is_status_leader(role) else "replica"
        reason = f"Patroni role {role}: ro.priority_{kind} {wanted}"
        self._log.info(
            "RO priority changed",
            role=role,
            previous_role=previous_role,
            priority=wanted,
            previous=self.priority,
        )
        self.priority = wanted
        self._feed(PriorityChanged(wanted, reason))
