"""Drives one VrrpInstance: feeds it events and the clock, and carries out its actions
(addresses, announcements, adverts, logs, notify) in order."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgvip.daemon.notify import Notifier
from pgvip.daemon.vrrp_channel import VrrpChannel
from pgvip.dataplane.addresses import AddressManager
from pgvip.dataplane.announce import Announcer
from pgvip.dataplane.conflict_watch import ConflictWatch
from pgvip.policy.link_gate import LinkGate, LinkState

if TYPE_CHECKING:
    from pgvip.status.metrics import Metrics
from pgvip.vrrp.actions import (
    Action,
    AddVip,
    Announce,
    RemoveVip,
    SendAdvert,
    Transition,
    TransitionKind,
)
from pgvip.vrrp.events import AdvertReceived, EligibilityChanged, Event, Shutdown, Tick
from pgvip.vrrp.instance import State, VrrpInstance

VipInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class AnnounceSettings:
    count: int
    interval: float
    refresh: float  # 0 = off

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"garp_count must be at least 1, got {self.count}")
        if self.interval < 0 or self.refresh < 0:
            raise ValueError(f"garp_interval and garp_refresh must be >= 0, got {self}")


@dataclass(frozen=True)
class TransitionRecord:
    at: float  # wall clock, for humans and the status API
    from_state: str
    to_state: str
    reason: str
    priority: int
    kind: TransitionKind


class InstanceRunner:
    def __init__(
        self,
        name: str,
        instance: VrrpInstance,
        *,
        ifname: str,
        channel: VrrpChannel,
        addresses: AddressManager,
        announcer: Announcer,
        announce: AnnounceSettings,
        notifier: Notifier,
        log: Any,
        metrics: Metrics,
        conflicts: ConflictWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.conflicts = conflicts  # told what we claim and release (another host's claims)
        self.instance = instance
        self._ifname = ifname
        self._channel = channel
        self._addresses = addresses
        self._announcer = announcer
        self._announce = announce
        self._notifier = notifier
        self._log = log
        self._clock = clock
        self.metrics = metrics
        # The VIPs were on the interface at the last add/remove/reconcile (for /status).
        self.held = False
        self.eligibility_reason = "not yet polled"
        self._eligible_at: float | None = None
        self.last_takeover: float | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._stopped = False
        # Serialises address changes between the election and the reconciler.
        self.lock = asyncio.Lock()
        self.transitions: collections.deque[TransitionRecord] = collections.deque(maxlen=50)
        self.listeners: list[Callable[[Transition], None]] = []
        # Called when the master we knew resigns (a priority-0 advert): nobody holds the VIP.
        self.on_master_resigned: list[Callable[[], None]] = []
        self._announce_task: asyncio.Task[int] | None = None
        self.apply_errors = 0
        self.link_gate = LinkGate(ifname)

    @property
    def vips(self) -> tuple[VipInterface, ...]:
        return tuple(self.instance.vips)

    @property
    def wants_vip(self) -> bool:
        # The link check is synchronous: the reconciler must not re-add a VIP that the
        # kernel flushed on link down while the FAULT event still waits in the queue.
        return self.instance.state is State.MASTER and self.link_gate.link_usable

    def feed(self, event: Event) -> None:
        if self._stopped:
            return
        if isinstance(event, EligibilityChanged):
            gated = self.link_gate.patroni(event)
            if gated is None:
                return
            self._feed_eligibility(gated)
            return
        self._queue.put_nowait(event)

    def link_changed(self, link: LinkState) -> None:
        """The VRRP interface changed state: an unusable link makes the instance ineligible."""
        if self._stopped:
            return
        gated = self.link_gate.link_changed(link)
        if gated is not None:
            self._feed_eligibility(gated)

    def _feed_eligibility(self, event: EligibilityChanged) -> None:
        self.eligibility_reason = event.reason
        self._eligible_at = self._clock() if event.eligible else None
        self._queue.put_nowait(event)

    def retune(self, announce: AnnounceSettings, notifier: Notifier) -> None:
        """Take new announcement and notify settings (a reload that needs no re-election)."""
        self._announce = announce
        self._notifier = notifier

    def set_held(self, held: bool) -> None:
        if held and not self.held and self._eligible_at is not None:
            # From "Patroni says leader" to "VIP on the interface".
            self.last_takeover = self._clock() - self._eligible_at
            self.metrics.takeover(self.last_takeover)
            self._eligible_at = None
        self.held = held
        self.metrics.vip_held(self.name, held)

    async def run(self) -> None:
        while not self._stopped:
            deadline = self.instance.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            event: Event = Tick()
            # A due timer goes first: get() on a non-empty queue never times out, so a
            # stream of adverts would otherwise hold back the master's own adverts.
            if timeout is None or timeout > 0:
                # asyncio.timeout, not wait_for: see Reconciler.run.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        event = await self._queue.get()
            if self._stopped:
                break
            now = self._clock()
            await self._apply(self.instance.handle(event, now))
            if (
                isinstance(event, AdvertReceived)
                and event.advert.priority == 0
                and self.instance.master_missing(now)
            ):
                for callback in self.on_master_resigned:
                    callback()

    async def shutdown(self, reason: str) -> None:
        """Leave Master cleanly (VIP removed, then a priority-0 advert) and go inert."""
        if self._stopped:
            return
        self._stopped = True
        await self._apply(self.instance.handle(Shutdown(reason=reason), self._clock()))
        self._stop_announcing()

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            try:
                await self._apply_one(action)
            except Exception as exc:  # one failed action must not stop the others
                self.apply_errors += 1
                self._log.error(
                    "action failed",
                    instance=self.name,
                    action=type(action).__name__,
                    error=str(exc) or type(exc).__name__,
                )

    async def _apply_one(self, action: Action) -> None:
        if isinstance(action, SendAdvert):
            if self.link_gate.link_usable:  # on a down link it cannot leave (ENETUNREACH)
                self._channel.send(action.advert)
        elif isinstance(action, AddVip):
            if self.conflicts is not None:
                for vip in self.vips:  # before the add: its ARP probe asks who has it now
                    self.conflicts.claimed(vip.ip, on_cleared=self.start_announcing)
            async with self.lock:
                for vip in self.vips:
                    if await self._addresses.add(vip):
                        self._log.info(
                            "VIP added", instance=self.name, vip=str(vip), interface=self._ifname
                        )
                self.set_held(True)
        elif isinstance(action, RemoveVip):
            self._stop_announcing()
            async with self.lock:
                for vip in self.vips:
                    if await self._addresses.remove(vip):
                        self._log.info(
                            "VIP removed", instance=self.name, vip=str(vip), interface=self._ifname
                        )
                    if self.conflicts is not None:
                        self.conflicts.released(vip.ip)
                self.set_held(False)
        elif isinstance(action, Announce):
            self.start_announcing()
        elif isinstance(action, Transition):
            self._on_transition(action)

    def start_announcing(self) -> None:
        """Start (or restart) the GARP / unsolicited NA burst for this instance's VIPs."""
        self._stop_announcing()
        refresh = self._announce.refresh or None
        self._announce_task = asyncio.get_running_loop().create_task(
            self._announcer.burst(
                self._ifname,
                self.vips,
                self._announce.count,
                self._announce.interval,
                refresh=refresh,
            ),
            name=f"announce-{self.name}",
        )

    def _stop_announcing(self) -> None:
        self._announcer.stop()
        if self._announce_task is not None:
            self._announce_task.cancel()
            self._announce_task = None

    def _on_transition(self, t: Transition) -> None:
        self.transitions.append(
            TransitionRecord(
                time.time(), t.from_state.name, t.to_state.name, t.reason, t.priority, t.kind
            )
        )
        self._log.info(
            "transition",
            instance=self.name,
            **{"from": t.from_state.name, "to": t.to_state.name},
            reason=t.reason,
            priority=t.priority,
        )
        self._notifier.transition(self.name, t.to_state.name, t.priority)
        self.metrics.transition(self.name, t.from_state.name, t.to_state.name, t.kind.value)
        self.metrics.state(self.name, t.to_state.name)
        for listener in self.listeners:
            listener(t)
