"""A fixed-rate polling schedule that never bursts to catch up after a slow answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Cadence:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next_at = clock()

    async def wait(self) -> None:
        """Sleep until the next tick; after an overrun, the next tick is now."""
        self._next_at += self.interval
        delay = self._next_at - self._clock()
        if delay < 0:  # a slow answer: do not fire a burst of catch-up polls
            self._next_at = self._clock()
            delay = 0
        await asyncio.sleep(delay)
