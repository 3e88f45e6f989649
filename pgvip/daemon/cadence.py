"""A fixed-rate polling schedule that never bursts to catch up after a slow answer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class Cadence:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next_at = clock()

    async def wait(self, interval: float | None = None, wake: asyncio.Event | None = None) -> None:
        """Sleep until the next tick (`interval` after the last one, default self.interval);
        after an overrun, the next tick is now. Setting `wake` ends the sleep early, and the
        schedule starts again from then."""
        self._next_at += self.interval if interval is None else interval
        delay = self._next_at - self._clock()
        if delay < 0:  # a slow answer: do not fire a burst of catch-up polls
            self._next_at = self._clock()
            delay = 0
        if wake is None:
            await asyncio.sleep(delay)
            return
        # asyncio.timeout, not wait_for: see Reconciler.run.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()
                self._next_at = self._clock()
        wake.clear()
