"""Event-loop stall detection: every advert, Patroni poll, port check and reconcile pass of
pgvip runs on one asyncio loop, so a loop that wakes late delays all of them at once. A
stall longer than the advert interval means late adverts; one longer than
Master_Down_Interval lets a backup take the VIP while this node still holds it (in bgp mode,
where nothing is advertised, the Patroni poll interval is the limit). This says
so in the log and in metrics, so that an overlap or a failed poll can be traced to CPU
starvation (load, a cgroup CPU limit, a paused VM) or to a blocking call in pgvip.

`StallMeter` is pure (fed the due and actual wake-up times); `watch` is its asyncio shell.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pgvip.config import Config
from pgvip.log import Logger

__all__ = ["TICK", "Stall", "StallMeter", "stall_master_down", "stall_threshold", "watch"]

TICK = 0.05  # seconds between wake-ups of the watch; its own cost is negligible
LOG_EVERY = 10.0  # at most one warning per this many seconds; the rest are counted


@dataclass(frozen=True)
class Stall:
    """A wake-up `late_s` after it was due. `report`: log it now (else it is counted and
    reported with the next one logged); `suppressed`/`worst_s`: stalls not logged since the
    last report, and the longest of them."""

    late_s: float
    report: bool
    suppressed: int
    worst_s: float


class StallMeter:
    def __init__(self, log_every: float = LOG_EVERY) -> None:
        self._log_every = log_every
        self._last_report: float | None = None
        self._suppressed = 0
        self._worst = 0.0
        self.count = 0
        self.max_late_s = 0.0

    def woke(self, due: float, now: float, threshold: float) -> Stall | None:
        """The watch was due at `due` and woke at `now`; a stall when late by more than
        `threshold` seconds."""
        late = max(0.0, now - due)
        if late <= threshold:
            return None
        self.count += 1
        self.max_late_s = max(self.max_late_s, late)
        if self._last_report is not None and now - self._last_report < self._log_every:
            self._suppressed += 1
            self._worst = max(self._worst, late)
            return Stall(late, report=False, suppressed=0, worst_s=0.0)
        stall = Stall(late, report=True, suppressed=self._suppressed, worst_s=self._worst)
        self._last_report = now
        self._suppressed, self._worst = 0, 0.0
        return stall


def stall_threshold(config: Config) -> float:
    """How late a wake-up may be before it is a stall: one advert interval; in bgp mode,
    with no adverts, one Patroni poll interval (the RW route's withdraw waits on a poll)."""
    if config.rw.announce == "bgp":
        return config.patroni.poll_interval
    return config.vrrp.advert_int / 100


def stall_master_down(config: Config) -> float:
    """A stall this long lets a VRRP backup declare this node down (3 advert intervals, the
    skew aside); never in bgp mode, where BIRD, its own process, keeps the sessions up."""
    if config.rw.announce == "bgp":
        return math.inf
    return 3 * config.vrrp.advert_int / 100


class LagSink(Protocol):
    def loop_lag(self, late_s: float, stalled: bool) -> None: ...


async def watch(
    meter: StallMeter,
    threshold: Callable[[], float],
    master_down: Callable[[], float],
    log: Logger,
    metrics: LagSink | None = None,
    tick: float = TICK,
) -> None:
    """Wake every `tick` s and measure how late; runs until cancelled. `threshold` and
    `master_down` are read at each wake-up, so a reload's new advert interval applies."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + tick
        await asyncio.sleep(tick)
        now = loop.time()
        limit = threshold()
        stall = meter.woke(due, now, limit)
        if metrics is not None:
            metrics.loop_lag(max(0.0, now - due), stall is not None)
        if stall is None or not stall.report:
            continue
        down = master_down()
        fields: dict[str, object] = {
            "late_s": round(stall.late_s, 3),
            "threshold_s": round(limit, 3),
        }
        if math.isfinite(down):
            fields["master_down_s"] = round(down, 3)
        if stall.suppressed:
            fields["stalls_since_last_warning"] = stall.suppressed
            fields["worst_since_last_warning_s"] = round(stall.worst_s, 3)
        log.warning(
            "event loop stalled: adverts, Patroni polls and checks ran late "
            "(CPU starvation of this process, or a blocking call in it)"
            + (
                "; peers may have declared this node down" if stall.late_s >= down else ""
            ),  # fmt: skip
            **fields,
        )
