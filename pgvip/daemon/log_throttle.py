"""Repeated identical errors logged once per change of outcome, not once per poll.

Pure and shared: the Patroni poll logs (`poll_log`) and the RO director's `/cluster` and
balancer errors all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ErrorLogThrottle", "LogDecision"]


@dataclass(frozen=True)
class LogDecision:
    log: bool  # log this one: the first of its kind, or different from the previous one
    suppressed: int  # identical repeats not logged since the last logged one (when log is True)
    previous: tuple[str, str] | None  # the (cause, reason) being replaced, if any


class ErrorLogThrottle:
    """Repeated identical errors are logged once per change, not once per poll.

    Feed it every outcome (including successes, e.g. cause "ok") in order; it answers whether
    to log this one and how many identical ones went unlogged before it.
    """

    def __init__(self) -> None:
        self._current: tuple[str, str] | None = None
        self._repeats = 0

    @property
    def current(self) -> tuple[str, str] | None:
        return self._current

    @property
    def repeats(self) -> int:
        """Identical outcomes seen since the last logged one (not yet reported)."""
        return self._repeats

    def observe(self, cause: str, reason: str) -> LogDecision:
        key = (cause, reason)
        if key == self._current:
            self._repeats += 1
            return LogDecision(log=False, suppressed=0, previous=None)
        decision = LogDecision(log=True, suppressed=self._repeats, previous=self._current)
        self._current = key
        self._repeats = 0
        return decision
