"""Heals drift: compares which VIPs should be on the interface with what netlink says
is there, on every address/link event and periodically."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pgvip.daemon.instance_runner import InstanceRunner
from pgvip.dataplane.addresses import AddressManager, AddressWatcher

RECONCILE_INTERVAL = 2.0


class Reconciler:
    def __init__(
        self,
        runners: list[InstanceRunner],
        addresses: AddressManager,
        *,
        log: Any,
        interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self._runners = runners
        self._addresses = addresses
        self._log = log
        self._interval = interval
        self._wake = asyncio.Event()
        self.runs = 0
        self.repairs = 0
        self.on_reconciled: list[Callable[[], None]] = []

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception as exc:
                self._log.error("reconcile failed", error=str(exc) or type(exc).__name__)
            else:
                for callback in self.on_reconciled:
                    callback()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the event being set, and stop() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()

    async def reconcile_once(self) -> None:
        self.runs += 1
        for runner in self._runners:
            async with runner.lock:
                want = runner.wants_vip
                for vip in runner.vips:
                    have = await self._addresses.has(vip)
                    if want and not have:
                        await self._addresses.add(vip)
                        self.repairs += 1
                        self._log.warning(
                            "reconcile: VIP missing while MASTER, re-added",
                            instance=runner.name,
                            vip=str(vip),
                        )
                        runner.start_announcing()
                    elif have and not want:
                        await self._addresses.remove(vip)
                        self.repairs += 1
                        self._log.warning(
                            "reconcile: VIP present while not MASTER, removed",
                            instance=runner.name,
                            vip=str(vip),
                            state=runner.instance.state.name,
                        )

    async def watch(self, watcher: AddressWatcher) -> None:
        """Reconcile at once when the kernel reports a link or address change."""
        async for _change in watcher:
            self.poke()
