"""Logging for Patroni polls: failures counted by cause, and a repeated identical
failure logged once per change of outcome, not once per poll."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pgvip.daemon.log_throttle import ErrorLogThrottle
from pgvip.patroni.verdict import Observation, Verdict


class PollLog:
    def __init__(self, log: Any, *, prefix: str, definite: Collection[str]) -> None:
        """`definite`: causes that are answers, not failures (a change between them is
        not a recovery worth a log line)."""
        self._log = log
        self._prefix = prefix
        self._definite = frozenset(definite)
        self._throttle = ErrorLogThrottle()
        self.errors: dict[str, int] = {}  # failed polls by cause, since start

    def record(self, obs: Observation, key: str | None = None) -> None:
        """Count and maybe log `obs`; `key` (default: its reason) decides what "the same
        outcome again" means."""
        failed = obs.verdict is Verdict.UNKNOWN
        if failed:
            self.errors[obs.cause] = self.errors.get(obs.cause, 0) + 1
        decision = self._throttle.observe(obs.cause, obs.reason if key is None else key)
        if not decision.log:
            return
        if failed:
            self._log.warning(
                f"{self._prefix}cannot ask Patroni",
                cause=obs.cause,
                reason=obs.reason,
                repeats_of_previous=decision.suppressed,
            )
        elif decision.previous is not None and decision.previous[0] not in self._definite:
            self._log.info(
                f"{self._prefix}Patroni answering again",
                reason=obs.reason,
                failed_polls=decision.suppressed + 1,
            )
