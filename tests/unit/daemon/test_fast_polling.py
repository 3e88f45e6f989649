"""PatroniWatch polls faster while the RW VIP has no holder, wakes at once on a resign, and
falls back to its normal cadence after the window. Real asyncio time, short intervals."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pgvip.daemon.patroni_watch import FastPolling, PatroniWatch
from pgvip.patroni.verdict import Observation, PatroniError, Verdict
from pgvip.policy.eligibility import EligibilityPolicy
from tests.unit.daemon.ro_standins import RecordingLog


class NoStatus:
    async def patroni_status(self) -> Any:
        raise PatroniError("not asked in this test")


class Rig:
    def __init__(self, interval: float, fast: FastPolling | None) -> None:
        self.polled_at: list[float] = []
        self.log = RecordingLog()
        self.watch = PatroniWatch(
            NoStatus(),  # type: ignore[arg-type]
            EligibilityPolicy(1, 3),
            poll=self._poll,
            interval=interval,
            feed=lambda event: None,
            log=self.log,
            fast=fast,
        )

    async def _poll(self) -> Observation:
        now = time.monotonic()
        self.polled_at.append(now)
        return Observation(Verdict.NO, "/primary 503", "http_503", now, 0.001)

    async def run_for(self, seconds: float) -> int:
        before = len(self.polled_at)
        await asyncio.sleep(seconds)
        return len(self.polled_at) - before


async def _with(rig: Rig, body: Any) -> None:
    task = asyncio.create_task(rig.watch.run())
    try:
        await body()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_fast_cadence_only_while_urgent() -> None:
    urgent = False
    rig = Rig(0.2, FastPolling(lambda: urgent, interval=0.02, window=60))

    async def body() -> None:
        nonlocal urgent
        calm = await rig.run_for(0.6)
        assert calm <= 5, f"{calm} polls in 0.6 s at a 0.2 s cadence"
        urgent = True
        await asyncio.sleep(0.25)  # the switch happens at the next poll
        hurried = await rig.run_for(0.6)
        assert hurried >= 12, f"only {hurried} polls in 0.6 s at a 0.02 s cadence"
        assert rig.watch.polling_fast
        urgent = False
        await asyncio.sleep(0.1)
        calm = await rig.run_for(0.6)
        assert calm <= 5
        assert not rig.watch.polling_fast

    await _with(rig, body)
    events = rig.log.events("info")
    assert "no RW master: polling Patroni every 0.02s for up to 60s" in events
    assert "RW master present again: polling Patroni every 0.2s" in events


async def test_wake_polls_at_once() -> None:
    rig = Rig(10.0, FastPolling(lambda: False, interval=0.02, window=60))

    async def body() -> None:
        await asyncio.sleep(0.05)
        assert len(rig.polled_at) == 1  # the first poll; the next is 10 s away
        woke = time.monotonic()
        rig.watch.wake()
        await asyncio.sleep(0.1)
        assert len(rig.polled_at) == 2
        assert rig.polled_at[1] - woke < 0.08

    await _with(rig, body)


async def test_the_window_bounds_fast_polling() -> None:
    rig = Rig(0.2, FastPolling(lambda: True, interval=0.02, window=0.3))

    async def body() -> None:
        await asyncio.sleep(0.5)  # the window is over
        late = await rig.run_for(0.6)
        assert late <= 5, f"{late} polls in 0.6 s after the window"
        assert not rig.watch.polling_fast

    await _with(rig, body)
    assert "still no RW master after 0.3s: polling Patroni every 0.2s again" in rig.log.events()


async def test_without_fast_polling_wake_does_nothing() -> None:
    rig = Rig(10.0, None)

    async def body() -> None:
        await asyncio.sleep(0.05)
        rig.watch.wake()
        await asyncio.sleep(0.1)
        assert len(rig.polled_at) == 1

    await _with(rig, body)
