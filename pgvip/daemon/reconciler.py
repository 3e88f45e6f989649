"""Heals drift: compares which VIPs should be on the interface with what netlink says
is there, on every address/link event and periodically."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from pgvip.daemon.instance_runner import InstanceRunner
from pgvip.dataplane.address_watcher import AddressWatcher, EventsLost, LinkChanged
from pgvip.dataplane.addresses import AddressManager
from pgvip.policy.link_gate import LinkState

# Compare wanted VIPs with the interface this often, besides on every netlink event.
VIP_RECONCILE_INTERVAL = 2.0


class ReconcileLoop:
    """Runs `reconcile_once` now, on every `poke()` and at least every `interval` seconds;
    after each clean pass it calls `on_reconciled` (the daemon's readiness and watchdog)."""

    def __init__(self, *, log: Any, interval: float = VIP_RECONCILE_INTERVAL) -> None:
        self._log = log
        self._interval = interval
        self._wake = asyncio.Event()
        self.runs = 0
        self.on_reconciled: list[Callable[[], None]] = []

    def poke(self) -> None:
        self._wake.set()

    async def reconcile_once(self) -> None:
        raise NotImplementedError

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


class Reconciler(ReconcileLoop):
    def __init__(
        self,
        runners: list[InstanceRunner],
        addresses: AddressManager,
        *,
        log: Any,
        interval: float = VIP_RECONCILE_INTERVAL,
    ) -> None:
        super().__init__(log=log, interval=interval)
        self._runners = runners
        self._addresses = addresses
        self.repairs = 0

    async def reconcile_once(self) -> None:
        self.runs += 1
        for runner in self._runners:
            async with runner.lock:
                want = runner.wants_vip
                for vip in runner.vips:
                    have = await self._addresses.has(vip)
                    if want and not have:
                        if not await self._addresses.link_usable():
                            # The link went down and its notification is not read yet:
                            # the kernel flushed the VIP on purpose; FAULT follows.
                            continue
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
                            "reconcile: VIP present while not MASTER, removed"
                            if runner.link_gate.link_usable
                            else "reconcile: VIP present on an unusable link, removed",
                            instance=runner.name,
                            vip=str(vip),
                            state=runner.instance.state.name,
                        )

    async def watch(self, watcher: AddressWatcher) -> None:
        """Reconcile at once when the kernel reports a link or address change; tell the
        instances when the VRRP interface goes down or comes back."""
        ifname = self._addresses.ifname
        self._link_changed(self._dumped_link(watcher))
        async for change in watcher:
            if isinstance(change, LinkChanged) and change.ifname == ifname:
                if change.removed:
                    self._addresses.invalidate()
                self._link_changed(
                    LinkState(up=change.up, carrier=change.carrier, present=not change.removed)
                )
            elif isinstance(change, EventsLost):
                # The watcher re-subscribed and dumped the links again: a change may be lost.
                self._addresses.invalidate()
                self._link_changed(self._dumped_link(watcher))
            self.poke()

    def _dumped_link(self, watcher: AddressWatcher) -> LinkState:
        state = watcher.link_state(self._addresses.ifname)
        if state is None:
            return LinkState(up=False, carrier=False, present=False)
        return LinkState(up=state[0], carrier=state[1])

    def _link_changed(self, link: LinkState) -> None:
        ifname = self._addresses.ifname
        # Every runner's gate has seen the same link states: the first one speaks for all.
        was_usable = self._runners[0].link_gate.link_usable if self._runners else True
        if link.usable != was_usable:
            if link.usable:
                self._log.info("interface usable again", interface=ifname)
            else:
                self._log.warning(
                    "interface unusable: VIPs released until it is back",
                    interface=ifname,
                    why=link.describe(ifname),
                )
        for runner in self._runners:
            runner.link_changed(link)
