"""Applies one VIP's L3 decisions: the pure RouteHolder says announce or withdraw, and
this puts the VIP on the bgp interface (the speaker exports exactly what is there) or takes
it off. It also heals drift: the address is compared with the decision on every netlink
event and every few seconds."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgvip.daemon.instance_runner import TransitionRecord
from pgvip.daemon.notify import Notifier
from pgvip.dataplane.addresses import AddressManager
from pgvip.policy.route_holder import RouteHolder
from pgvip.vrrp.actions import Action, AddVip, RemoveVip, Transition
from pgvip.vrrp.events import EligibilityChanged, Shutdown

if TYPE_CHECKING:
    from pgvip.status.metrics import Metrics

VipInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class RouteRunner:
    def __init__(
        self,
        name: str,
        vip: VipInterface,
        *,
        addresses: AddressManager,
        notifier: Notifier,
        log: Any,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.holder = RouteHolder(name)
        self.vip = vip
        self._addresses = addresses
        self._notifier = notifier
        self._log = log
        self._clock = clock
        self.metrics = metrics
        self.held = False
        self.lock = asyncio.Lock()
        self.transitions: collections.deque[TransitionRecord] = collections.deque(maxlen=50)
        self.listeners: list[Callable[[Transition], None]] = []
        self.last_takeover: float | None = None
        self._eligible_at: float | None = None
        self._queue: asyncio.Queue[EligibilityChanged | Shutdown] = asyncio.Queue()
        self._stopped = False
        self.apply_errors = 0
        self.repairs = 0

    @property
    def vips(self) -> tuple[VipInterface, ...]:
        return (self.vip,)

    @property
    def wants_vip(self) -> bool:
        return self.holder.announced

    def feed(self, event: EligibilityChanged) -> None:
        if not self._stopped:
            self._eligible_at = self._clock() if event.eligible else None
            self._queue.put_nowait(event)

    def retune(self, notifier: Notifier) -> None:
        self._notifier = notifier

    async def run(self) -> None:
        while not self._stopped:
            event = await self._queue.get()
            if self._stopped:
                break
            await self._apply(self.holder.handle(event, self._clock()))

    async def shutdown(self, reason: str) -> None:
        """Withdraw (the VIP leaves the bgp interface) and go inert."""
        if self._stopped:
            return
        self._stopped = True
        await self._apply(self.holder.handle(Shutdown(reason=reason), self._clock()))

    async def reconcile(self) -> None:
        async with self.lock:
            want, have = self.wants_vip, await self._addresses.has(self.vip)
            if want == have:
                return
            self.repairs += 1
            if want:
                await self._addresses.add(self.vip)
                self._log.warning(
                    "reconcile: VIP missing while announced, re-added",
                    instance=self.name,
                    vip=str(self.vip),
                )
            else:
                await self._addresses.remove(self.vip)
                self._log.warning(
                    "reconcile: VIP present while withdrawn, removed",
                    instance=self.name,
                    vip=str(self.vip),
                )
            self._set_held(want)

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                await self._apply_one(action)
            except Exception as exc:  # the reconciler retries the address
                self.apply_errors += 1
                self._log.error(
                    "action failed",
                    instance=self.name,
                    action=type(action).__name__,
                    error=str(exc) or type(exc).__name__,
                )

    async def _apply_one(self, action: Action) -> None:
        iface = self._addresses.ifname
        if isinstance(action, AddVip):
            async with self.lock:
                if await self._addresses.add(self.vip):
                    self._log.info(
                        "VIP added: route announced",
                        instance=self.name,
                        vip=str(self.vip),
                        interface=iface,
                    )
                self._set_held(True)
        elif isinstance(action, RemoveVip):
            async with self.lock:
                if await self._addresses.remove(self.vip):
                    self._log.info(
                        "VIP removed: route withdrawn",
                        instance=self.name,
                        vip=str(self.vip),
                        interface=iface,
                    )
                self._set_held(False)
        elif isinstance(action, Transition):
            self._on_transition(action)

    def _set_held(self, held: bool) -> None:
        if held and not self.held and self._eligible_at is not None:
            self.last_takeover = self._clock() - self._eligible_at
            self.metrics.takeover(self.last_takeover)
            self._eligible_at = None
        self.held = held
        self.metrics.vip_held(self.name, held)

    def _on_transition(self, t: Transition) -> None:
        self.transitions.append(
            TransitionRecord(
                time.time(), t.from_state.name, t.to_state.name, t.reason, t.priority, t.kind
            )
        )
        self._log.info(
            "transition",
            instance=self.name,
            announce="bgp",
            **{"from": t.from_state.name, "to": t.to_state.name},
            reason=t.reason,
        )
        self._notifier.transition(self.name, t.to_state.name, t.priority)
        self.metrics.transition(self.name, t.from_state.name, t.to_state.name, t.kind.value)
        for listener in self.listeners:
            listener(t)
