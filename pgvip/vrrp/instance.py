"""The VRRPv3 state machine for one virtual router (RFC 5798 §6.4, RFC 9568), sans-IO.

Events go in with the current time, actions come out. The legal moves are the table in
rules.py, keyed by (state, input); this module is the interface the daemon uses: `handle`,
the next deadline and the read-only status.
"""

from __future__ import annotations

from pgvip.vrrp.actions import Action
from pgvip.vrrp.events import AdvertReceived, Event
from pgvip.vrrp.instance_config import InstanceConfig, VipInterface
from pgvip.vrrp.packet import IPAddress
from pgvip.vrrp.rules import TRANSITIONS, Rules, input_of
from pgvip.vrrp.states import State
from pgvip.vrrp.timers import Heard, master_down_interval

__all__ = ["State", "VrrpInstance"]


class VrrpInstance(Rules):
    """One VRRPv3 virtual router.

    It starts in INIT, not eligible, and listens: adverts heard in INIT and FAULT are
    remembered, so that becoming eligible after the master resigned (priority 0) or
    vanished takes over after Skew_Time instead of a full Master_Down_Interval.
    A node that has not listened for a Master_Down_Interval since it was created still
    waits for one, as the RFC's Backup would, so a restart never steals the VIP blindly.

    PriorityChanged replaces the configured priority from then on (adverts, Skew_Time,
    Master_Down_Interval, comparisons, Transition.priority). A MASTER advertises the new
    priority at once, so that a higher-priority backup with preempt starts discarding its
    adverts and takes over when its timer runs out; a BACKUP keeps its running timer.

    preempt_delay: for preempt_delay seconds after becoming eligible, the instance does
    not preempt a live lower-priority master (keepalived's "after startup" meaning). It
    never delays taking over from a master that stopped advertising or resigned.

    Call `handle(event, now)` for each event and `handle(Tick(), now)` once
    `now >= next_deadline()`. A `now` earlier than one already seen is taken as that
    one, because a reader may stamp a packet before a tick is handled.
    """

    # -- the interface the daemon uses -------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to perform, in order."""
        kind = input_of(event)
        if self._stopped:
            return []
        now = max(now, self._now)
        self._now = now
        if isinstance(event, AdvertReceived):
            if not self._is_ours(event):
                return []
            self._remember(event, now)
        return TRANSITIONS[(self._state, kind)](self, event, now)

    def resume_after_resign(self, resigned_at: float) -> None:
        """Before any event: this node's previous run was master and resigned (priority 0) at
        `resigned_at`. Taken as a priority-0 advert heard from ourselves then, so becoming
        eligible takes over after Skew_Time instead of listening for a Master_Down_Interval,
        exactly as after another node's resign. Any advert heard later replaces it."""
        if self._state is State.INIT and self._heard is None:
            self._heard = Heard(
                self._config.primary_address, 0, self._config.advert_interval, resigned_at
            )

    def next_deadline(self) -> float | None:
        """When the next Tick is due, or None if no timer runs (INIT, FAULT, stopped)."""
        if self._stopped:
            return None
        if self._state is State.BACKUP:
            return self._master_down_at
        if self._state is State.MASTER:
            return self._adver_at
        return None

    # -- read-only status ----------------------------------------------------------------

    @property
    def config(self) -> InstanceConfig:
        return self._config

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def state(self) -> State:
        return self._state

    @property
    def priority(self) -> int:
        """The effective priority (config.priority, or the last PriorityChanged)."""
        return self._priority

    @property
    def priority_reason(self) -> str:
        """Why the priority is what it is: "configured", or the last PriorityChanged's reason."""
        return self._priority_reason

    @property
    def vips(self) -> tuple[VipInterface, ...]:
        return self._config.vips

    @property
    def eligible(self) -> bool:
        return self._state in (State.BACKUP, State.MASTER)

    @property
    def holds_vips(self) -> bool:
        """True between the AddVip and the RemoveVip this instance emitted."""
        return self._state is State.MASTER

    @property
    def stopped(self) -> bool:
        """True after Shutdown: the instance ignores every further event."""
        return self._stopped

    @property
    def master_address(self) -> IPAddress | None:
        """Who is master as far as we know: us while MASTER, else the last advert's sender."""
        if self._state is State.MASTER:
            return self._config.primary_address
        return self._heard.address if self._heard else None

    @property
    def master_priority(self) -> int | None:
        """The priority matching master_address (0 if that master resigned)."""
        if self._state is State.MASTER:
            return self._priority
        return self._heard.priority if self._heard else None

    def master_missing(self, now: float) -> bool:
        """True when, as far as we know, nobody holds the VIPs: no master was ever heard, the
        last one resigned (priority 0), or it has been silent for a Master_Down_Interval.
        False while we are MASTER. The daemon polls Patroni faster while this holds."""
        if self._state is State.MASTER:
            return False
        heard = self._heard
        if heard is None or heard.priority == 0:
            return True
        return now >= heard.at + master_down_interval(self._priority, heard.interval)

    @property
    def last_advert_at(self) -> float | None:
        """When we last heard an advert from another router (any priority, any state)."""
        return self._heard.at if self._heard else None

    @property
    def master_adver_interval(self) -> float:
        """Seconds; learned from the master's adverts while Backup (RFC 9568)."""
        return self._master_adver_interval

    @property
    def became_master_at(self) -> float | None:
        """When the current MASTER period started; None when not MASTER."""
        return self._became_master_at

    def __repr__(self) -> str:
        return (
            f"<VrrpInstance {self.name} vrid={self._config.vrid} {self._state.name} "
            f"priority={self._priority}>"
        )

    def _is_ours(self, event: AdvertReceived) -> bool:
        # Other VRIDs share the wire and the socket; our own adverts may be looped back.
        primary = self._config.primary_address
        return (
            event.advert.vrid == self._config.vrid
            and event.src.version == primary.version
            and event.src != primary
        )

    def _remember(self, event: AdvertReceived, now: float) -> None:
        advert = event.advert
        self._heard = Heard(event.src, advert.priority, advert.max_advert_int / 100, now)
