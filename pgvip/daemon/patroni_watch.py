"""Polls the local Patroni and turns its answers into eligibility events for an instance."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pgvip.daemon.cadence import Cadence
from pgvip.daemon.poll_log import PollLog
from pgvip.patroni.client import PatroniClient
from pgvip.patroni.verdict import Observation, PatroniError, PatroniStatus
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.vrrp.events import EligibilityChanged

# /patroni is context (failsafe, timeline), not the verdict: read it on every
# change of verdict and otherwise once every this many polls.
STATUS_EVERY = 10


@dataclass(frozen=True)
class FastPolling:
    """Poll every `interval` seconds while `urgent()` says the VIP has no holder, for at most
    `window` seconds at a stretch. `urgent` is the RW instance's `master_missing`."""

    urgent: Callable[[], bool]
    interval: float
    window: float


class PatroniWatch:
    """Polls one Patroni endpoint (e.g. /primary) at a fixed cadence, and faster while the
    VIP has no holder: then each poll's delay is downtime, and the next leader is about to
    appear (a switchover's old primary resigned, or a failed one went silent)."""

    def __init__(
        self,
        client: PatroniClient,
        policy: EligibilityPolicy,
        *,
        poll: Callable[[], Awaitable[Observation]],
        interval: float,
        feed: Callable[[EligibilityChanged], None],
        log: Any,
        on_poll: Callable[[Observation], None] = lambda obs: None,
        instance: str = "rw",
        fast: FastPolling | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.policy = policy
        self._poll = poll
        self._cadence = Cadence(interval, clock)
        self.fast = fast
        self._urgent_since: float | None = None
        self.polling_fast = False
        self._wake = asyncio.Event()
        self._feed = feed
        self._log = log
        self._clock = clock
        self._on_poll = on_poll
        self.instance = instance
        self.status_at: float | None = None  # when /patroni last answered
        self.last: Observation | None = None
        self.status: PatroniStatus | None = None  # the last answer of /patroni
        self.failsafe_active: bool | None = None
        self._poll_log = PollLog(log, prefix="", definite=("ok", "http_503"))
        self.polls = 0

    @property
    def errors(self) -> dict[str, int]:
        return self._poll_log.errors

    def retune(
        self, policy: EligibilityPolicy, interval: float, fast: FastPolling | None = None
    ) -> None:
        """New hysteresis and cadence from a reload; the next poll uses them."""
        self.policy = policy
        self._cadence.interval = interval
        self.fast = fast

    def wake(self) -> None:
        """Poll now (the master just resigned), then at the fast cadence if urgent."""
        if self.fast is not None:
            self._wake.set()

    def _interval(self) -> float:
        """The pause before the next poll; logs each switch between the two cadences."""
        fast = self.fast
        normal = self._cadence.interval
        now = self._clock()
        urgent = fast is not None and fast.interval < normal and fast.urgent()
        if not urgent:
            if self._urgent_since is not None:
                self._log.info(
                    f"RW master present again: polling Patroni every {normal:g}s",
                    fast_for=round(now - self._urgent_since, 2),
                )
            self._urgent_since = None
            self.polling_fast = False
            return normal
        assert fast is not None
        if self._urgent_since is None:
            self._urgent_since = now
            self._log.info(
                f"no RW master: polling Patroni every {fast.interval:g}s for up to {fast.window:g}s"
            )
        if now - self._urgent_since > fast.window:
            if self.polling_fast:
                self._log.info(
                    f"still no RW master after {fast.window:g}s: polling Patroni every "
                    f"{normal:g}s again"
                )
            self.polling_fast = False
            return normal
        self.polling_fast = True
        return fast.interval

    async def run(self) -> None:
        first = True
        while True:
            obs = await self._poll()
            self.polls += 1
            if (
                self.last is None
                or obs.verdict != self.last.verdict
                or self.polls % STATUS_EVERY == 0
            ):
                await self._refresh_status()
            obs = dataclasses.replace(obs, failsafe_active=self.failsafe_active)
            self._poll_log.record(obs)
            self.last = obs
            self._on_poll(obs)
            decision = self.policy.observe(obs)
            if decision.changed or first:
                self._feed(EligibilityChanged(eligible=decision.eligible, reason=decision.reason))
                first = False
            await self._cadence.wait(self._interval(), self._wake)

    async def _refresh_status(self) -> None:
        try:
            self.status = await self._client.patroni_status()
        except PatroniError as exc:  # context only: never fatal
            self._log.debug("/patroni unavailable", error=str(exc))
            return
        self.failsafe_active = self.status.failsafe_mode_is_active
        self.status_at = self._clock()
