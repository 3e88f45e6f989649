"""Decides, every ro.poll_interval, whether this node announces the RO VIP in L3 mode: it
reads its own Patroni's `/patroni` (who am I) and `/cluster` (who serves) and applies
pgvip.policy.ro_routes, with ro.rise/ro.fall on top (a definite "no" withdraws at once)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pgvip.daemon.cadence import Cadence
from pgvip.daemon.poll_log import PollLog
from pgvip.patroni.client import PatroniClient
from pgvip.patroni.cluster import ClusterParseError, parse_cluster
from pgvip.patroni.verdict import Observation, PatroniError, PatroniUnavailable, Verdict
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.policy.ro_routes import ro_route
from pgvip.vrrp.events import EligibilityChanged


class RoRouteWatch:
    def __init__(
        self,
        client: PatroniClient,
        policy: EligibilityPolicy,
        *,
        interval: float,
        max_lag: int | None,
        fallback: str,
        feed: Callable[[EligibilityChanged], None],
        log: Any,
        on_poll: Callable[[Observation], None] = lambda obs: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.policy = policy
        self._interval = interval
        self._max_lag = max_lag
        self._fallback = fallback
        self._feed = feed
        self._on_poll = on_poll
        self._clock = clock
        self._poll_log = PollLog(log, prefix="RO routes: ", definite=("ok", "not_serving"))
        self.last: Observation | None = None
        self.polls = 0
        self._first = True

    @property
    def errors(self) -> dict[str, int]:
        return self._poll_log.errors

    async def run(self) -> None:
        cadence = Cadence(self._interval, self._clock)
        while True:
            await self.poll_once()
            await cadence.wait()

    async def _observe(self) -> Observation:
        started = self._clock()
        try:
            me = (await self._client.patroni_status()).name or ""
            view = parse_cluster(await self._client.cluster())
        except PatroniUnavailable as exc:
            done = self._clock()
            return Observation(Verdict.UNKNOWN, exc.reason, exc.cause, done, done - started)
        except (PatroniError, ClusterParseError) as exc:
            done = self._clock()
            return Observation(Verdict.UNKNOWN, str(exc), "invalid", done, done - started)
        done = self._clock()
        ok, why = ro_route(view, me, self._max_lag, self._fallback)
        verdict, cause = (Verdict.YES, "ok") if ok else (Verdict.NO, "not_serving")
        return Observation(verdict, why, cause, done, done - started)

    async def poll_once(self) -> Observation:
        obs = await self._observe()
        self.polls += 1
        self.last = obs
        self._on_poll(obs)
        self._poll_log.record(obs)
        decision = self.policy.observe(obs)
        if decision.changed or self._first:
            self._feed(EligibilityChanged(eligible=decision.eligible, reason=decision.reason))
            self._first = False
        return obs
