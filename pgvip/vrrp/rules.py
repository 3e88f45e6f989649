"""RFC 5798 §6.4 (with RFC 9568's changes) as a table: the protocol state of one virtual
router and one handler per (state, input) cell of `TRANSITIONS`, at the bottom, so the
protocol reads from one place. `VrrpInstance` (instance.py) is the interface around it.
Sans-IO: handlers take the current time and return actions.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pgvip.vrrp.actions import (
    Action,
    AddVip,
    Announce,
    RemoveVip,
    SendAdvert,
    Transition,
    TransitionKind,
)
from pgvip.vrrp.events import (
    AdvertReceived,
    EligibilityChanged,
    Event,
    PriorityChanged,
    Shutdown,
    Tick,
)
from pgvip.vrrp.instance_config import InstanceConfig
from pgvip.vrrp.packet import Advert
from pgvip.vrrp.states import State
from pgvip.vrrp.timers import Heard, master_down_interval, skew_time


class Input(enum.Enum):
    ADVERT = "advert"
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    PRIORITY = "priority"
    TICK = "tick"
    SHUTDOWN = "shutdown"


def input_of(event: Event) -> Input:
    if isinstance(event, AdvertReceived):
        return Input.ADVERT
    if isinstance(event, EligibilityChanged):
        return Input.ELIGIBLE if event.eligible else Input.INELIGIBLE
    if isinstance(event, PriorityChanged):
        return Input.PRIORITY
    if isinstance(event, Tick):
        return Input.TICK
    if isinstance(event, Shutdown):
        return Input.SHUTDOWN
    raise TypeError(f"VrrpInstance.handle() got {event!r}, which is not a pgvip.vrrp event")


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f}s"


class Rules:
    """The protocol variables of RFC 5798 §6.1 (plus what fast takeover remembers) and the
    rules that change them."""

    def __init__(self, config: InstanceConfig, now: float) -> None:
        self._config = config
        # The effective priority: config.priority until a PriorityChanged says otherwise.
        self._priority = config.priority
        self._priority_reason = "configured"
        self._state = State.INIT
        self._created_at = now
        self._now = now
        self._stopped = False
        self._heard: Heard | None = None
        self._master_adver_interval = config.advert_interval
        self._master_down_at: float | None = None  # Backup's Master_Down_Timer
        self._adver_at: float | None = None  # Master's Adver_Timer
        self._replied_at: float | None = None  # Master's last answer to another's advert
        self._eligible_since: float | None = None
        self._became_master_at: float | None = None
        self._addresses: tuple[IPv4Address, ...] | tuple[IPv6Address, ...] = tuple(
            vip.ip for vip in config.vips
        )  # type: ignore[assignment]

    @property
    def skew_time(self) -> float:
        return skew_time(self._priority, self._master_adver_interval)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(self._priority, self._master_adver_interval)

    def _advert(self, priority: int) -> Advert:
        return Advert(self._config.vrid, priority, self._config.advert_int, self._addresses)

    def _enter(self, state: State, reason: str, kind: TransitionKind) -> Transition:
        transition = Transition(self._state, state, reason, self._priority, kind)
        self._state = state
        if state is not State.MASTER:
            self._adver_at = None
            self._became_master_at = None
        if state is not State.BACKUP:
            self._master_down_at = None
        if state in (State.INIT, State.FAULT):
            self._eligible_since = None
        return transition

    def _lower_master_alive(self, now: float) -> Heard | None:
        """The heard master if it is live and below us: the only case where we preempt."""
        heard = self._heard
        if not self._config.preempt:
            return None
        if heard is None or not 0 < heard.priority < self._priority:
            return None
        # The same sum as the deadline _backup_tick arms, not `now - heard.at >= ...`: in
        # floating point the two can disagree by one ulp, and a tick at that deadline would
        # then re-arm the very same deadline (a busy loop).
        if now >= heard.at + master_down_interval(self._priority, heard.interval):
            return None
        return heard

    def _become_master(self, now: float, reason: str, kind: TransitionKind) -> list[Action]:
        transition = self._enter(State.MASTER, reason, kind)
        self._became_master_at = now
        self._adver_at = now + self._config.advert_interval
        return [AddVip(), Announce(), SendAdvert(self._advert(self._priority)), transition]

    def _resign(self, state: State, reason: str, kind: TransitionKind) -> list[Action]:
        # The VIP goes first: a peer that takes over on our priority 0 must never find it here.
        return [RemoveVip(), SendAdvert(self._advert(0)), self._enter(state, reason, kind)]

    # -- handlers, one per (state, input) cell of TRANSITIONS ------------------------------

    def _ignore(self, event: Event, now: float) -> list[Action]:
        return []

    def _listen(self, event: AdvertReceived, now: float) -> list[Action]:
        # handle() already remembered it; acting on it waits until we are eligible.
        return []

    def _eligible(self, event: EligibilityChanged, now: float) -> list[Action]:
        """INIT/FAULT -> BACKUP, with the Master_Down_Timer set from what we heard meanwhile."""
        own = self._priority
        heard = self._heard
        self._master_adver_interval = heard.interval if heard else self._config.advert_interval
        mdi = self.master_down_interval
        # Never sooner than Skew_Time: it keeps concurrent backups ordered by priority.
        earliest = now + self.skew_time
        if event.relisten and self._config.relisten_after_link:
            # Our link was down: silence meant nothing. A master may be up; hear it first.
            deadline = now + mdi
            why = f"the link was down: listening {_fmt(mdi)} for a master first"
        elif heard is None:
            listened = now - self._created_at
            deadline = max(self._created_at + mdi, earliest)
            if listened >= mdi:
                why = f"no master heard for {_fmt(listened)}"
            else:
                why = f"no master heard yet, listening for {_fmt(mdi)} since start"
        elif heard.priority == 0:
            deadline = earliest
            who = (
                "this node's previous run"
                if heard.address == self._config.primary_address
                else f"master {heard.address}"
            )
            why = f"{who} resigned (priority 0) {_fmt(now - heard.at)} ago"
        else:
            age = now - heard.at
            deadline = max(heard.at + mdi, earliest)
            if age >= mdi:
                why = f"no master heard for {_fmt(age)} (last was {heard.address})"
            else:
                relation = "higher" if heard.priority > own else "lower"
                if heard.priority == own:
                    relation = "equal"
                why = (
                    f"master {heard.address} ({relation} priority {heard.priority}) "
                    f"heard {_fmt(age)} ago"
                )
        prefix = f"eligible ({event.reason})" if event.reason else "eligible"
        transition = self._enter(
            State.BACKUP,
            f"{prefix}; {why}; master down in {_fmt(deadline - now)}",
            TransitionKind.ELIGIBLE,
        )
        self._master_down_at = deadline
        self._eligible_since = now
        return [transition]

    def _ineligible(self, event: EligibilityChanged, now: float) -> list[Action]:
        return [self._enter(State.FAULT, f"ineligible: {event.reason}", TransitionKind.INELIGIBLE)]

    def _ineligible_master(self, event: EligibilityChanged, now: float) -> list[Action]:
        return self._resign(State.FAULT, f"ineligible: {event.reason}", TransitionKind.INELIGIBLE)

    def _shutdown(self, event: Shutdown, now: float) -> list[Action]:
        self._stopped = True
        if self._state is State.INIT:
            return []
        return [self._enter(State.INIT, f"shutdown: {event.reason}", TransitionKind.SHUTDOWN)]

    def _shutdown_master(self, event: Shutdown, now: float) -> list[Action]:
        self._stopped = True
        return self._resign(State.INIT, f"shutdown: {event.reason}", TransitionKind.SHUTDOWN)

    def _set_priority(self, event: PriorityChanged) -> bool:
        """Store the new priority; False if it is the one we already have."""
        if event.priority == self._priority:
            return False
        self._priority = event.priority
        self._priority_reason = event.reason
        return True

    def _store_priority(self, event: PriorityChanged, now: float) -> list[Action]:
        # INIT/FAULT: no timer runs and we send nothing; becoming eligible uses the new value.
        self._set_priority(event)
        return []

    def _backup_priority(self, event: PriorityChanged, now: float) -> list[Action]:
        preempting = self._lower_master_alive(now)
        if not self._set_priority(event):
            return []
        if preempting is not None and self._lower_master_alive(now) is None:
            # We were discarding this master's adverts to preempt it, so our timer is due
            # about Master_Down_Interval after the first one. Now that it outranks us, its
            # adverts count again: arm the timer as if its last one had just been accepted,
            # or the timer would fire early and we would "take over" from a live master.
            self._master_adver_interval = preempting.interval
            self._master_down_at = preempting.at + self.master_down_interval
        # Otherwise the running timer stands; the next accepted advert uses the new skew.
        return []

    def _master_priority(self, event: PriorityChanged, now: float) -> list[Action]:
        if not self._set_priority(event):
            return []
        # Backups compare against what we advertise: tell them now, not at the next tick.
        self._adver_at = now + self._config.advert_interval
        return [SendAdvert(self._advert(self._priority))]

    def _backup_advert(self, event: AdvertReceived, now: float) -> list[Action]:
        advert = event.advert
        if advert.priority == 0:
            self._master_down_at = now + self.skew_time
        elif not self._config.preempt or advert.priority >= self._priority:
            self._master_adver_interval = advert.max_advert_int / 100
            self._master_down_at = now + self.master_down_interval
        # else: a lower-priority master and preempt on: discard it, so our timer runs out.
        return []

    def _backup_tick(self, event: Tick, now: float) -> list[Action]:
        if self._master_down_at is None or now < self._master_down_at:
            return []
        heard = self._heard
        lower = self._lower_master_alive(now)
        if lower is not None:
            assert self._eligible_since is not None
            hold_until = self._eligible_since + self._config.preempt_delay
            if now < hold_until:
                # Wake again when the delay ends or when that master goes silent, if sooner.
                self._master_down_at = min(
                    hold_until,
                    lower.at + master_down_interval(self._priority, lower.interval),
                )
                return []
            reason = (
                f"preempting {lower.address}: our priority {self._priority} > its {lower.priority}"
            )
            kind = TransitionKind.PREEMPT
        elif heard is not None and heard.priority == 0:
            reason = (
                "priority 0 from this node's previous run"
                if heard.address == self._config.primary_address
                else f"priority 0 from {heard.address}"
            )
            kind = TransitionKind.MASTER_RESIGNED
        else:
            since = heard.at if heard is not None else self._created_at
            reason = f"master down: no advert for {_fmt(now - since)}"
            kind = TransitionKind.MASTER_DOWN
        return self._become_master(now, reason, kind)

    def _master_advert(self, event: AdvertReceived, now: float) -> list[Action]:
        advert, src = event.advert, event.src
        own = self._priority
        primary = self._config.primary_address
        if advert.priority == 0:
            # A peer resigned: restate at once that we are master (RFC 5798 §6.4.3).
            if self._replied_recently(now):
                return []
            self._adver_at = now + self._config.advert_interval
            return [SendAdvert(self._advert(own))]
        if advert.priority > own or (advert.priority == own and int(src) > int(primary)):
            if advert.priority > own:
                why = f"master {src} has higher priority {advert.priority} > {own}"
            else:
                why = f"master {src} has equal priority {own} and higher address than {primary}"
            self._master_adver_interval = advert.max_advert_int / 100
            transition = self._enter(State.BACKUP, why, TransitionKind.HIGHER_PRIORITY)
            self._master_down_at = now + self.master_down_interval
            return [RemoveVip(), transition]
        # Split brain healing: the other master must hear us now, and clients must
        # relearn our MAC, which the other master may have taken over meanwhile.
        if self._replied_recently(now):
            return []
        self._adver_at = now + self._config.advert_interval
        return [SendAdvert(self._advert(own)), Announce()]

    def _replied_recently(self, now: float) -> bool:
        """At most one answer (advert, announcement) per advert interval: a stream of
        lower-priority or priority-0 adverts, forged or not, must not make us a reflector
        of adverts and broadcast ARP. Our own Adver_Timer keeps running meanwhile."""
        if self._replied_at is not None and now - self._replied_at < self._config.advert_interval:
            return True
        self._replied_at = now
        return False

    def _master_tick(self, event: Tick, now: float) -> list[Action]:
        if self._adver_at is None or now < self._adver_at:
            return []
        interval = self._config.advert_interval
        following = self._adver_at + interval
        # Keep the cadence drift-free, but after a stall send one advert, not a burst.
        self._adver_at = following if following > now else now + interval
        return [SendAdvert(self._advert(self._priority))]


_Handler = Callable[[Rules, Any, float], list[Action]]

_I = Input
_S = State
TRANSITIONS: dict[tuple[State, Input], _Handler] = {
    # INIT: not yet eligible; listen and remember the master.
    (_S.INIT, _I.ADVERT): Rules._listen,
    (_S.INIT, _I.ELIGIBLE): Rules._eligible,
    (_S.INIT, _I.INELIGIBLE): Rules._ineligible,
    (_S.INIT, _I.PRIORITY): Rules._store_priority,
    (_S.INIT, _I.TICK): Rules._ignore,
    (_S.INIT, _I.SHUTDOWN): Rules._shutdown,
    # FAULT: not eligible; listen and remember the master.
    (_S.FAULT, _I.ADVERT): Rules._listen,
    (_S.FAULT, _I.ELIGIBLE): Rules._eligible,
    (_S.FAULT, _I.INELIGIBLE): Rules._ignore,
    (_S.FAULT, _I.PRIORITY): Rules._store_priority,
    (_S.FAULT, _I.TICK): Rules._ignore,
    (_S.FAULT, _I.SHUTDOWN): Rules._shutdown,
    # BACKUP: RFC 5798 §6.4.2.
    (_S.BACKUP, _I.ADVERT): Rules._backup_advert,
    (_S.BACKUP, _I.ELIGIBLE): Rules._ignore,
    (_S.BACKUP, _I.INELIGIBLE): Rules._ineligible,
    (_S.BACKUP, _I.PRIORITY): Rules._backup_priority,
    (_S.BACKUP, _I.TICK): Rules._backup_tick,
    (_S.BACKUP, _I.SHUTDOWN): Rules._shutdown,
    # MASTER: RFC 5798 §6.4.3.
    (_S.MASTER, _I.ADVERT): Rules._master_advert,
    (_S.MASTER, _I.ELIGIBLE): Rules._ignore,
    (_S.MASTER, _I.INELIGIBLE): Rules._ineligible_master,
    (_S.MASTER, _I.PRIORITY): Rules._master_priority,
    (_S.MASTER, _I.TICK): Rules._master_tick,
    (_S.MASTER, _I.SHUTDOWN): Rules._shutdown_master,
}
