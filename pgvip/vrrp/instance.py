"""The VRRPv3 state machine for one virtual router (RFC 5798 §6.4, RFC 9568), sans-IO.

Events go in with the current time, actions come out; the legal moves are the `_TRANSITIONS`
table at the bottom, keyed by (state, input), so the protocol reads from one place.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
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
from pgvip.vrrp.packet import MAX_ADDRESSES, MAX_ADVERT_INT, Advert, IPAddress
from pgvip.vrrp.states import State

__all__ = ["InstanceConfig", "State", "VipInterface", "VrrpInstance"]

VipInterface = IPv4Interface | IPv6Interface


def _require_int(name: str, value: object, low: int, high: int, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in {low}..{high}{hint}, got {value!r}")


@dataclass(frozen=True)
class InstanceConfig:
    """What one VRRP instance needs to know; validated on construction (ValueError)."""

    name: str
    vrid: int
    priority: int
    advert_int: int  # centiseconds, as VRRPv3 carries it
    vips: tuple[VipInterface, ...]
    primary_address: IPAddress  # our own source address, used in the equal-priority tie-break
    preempt: bool = True
    preempt_delay: float = 0.0  # seconds; see VrrpInstance for when it applies

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"instance name must be a non-empty string, got {self.name!r}")
        where = f"instance {self.name!r}: "
        _require_int(where + "vrid", self.vrid, 1, 255)
        _require_int(
            where + "priority",
            self.priority,
            1,
            254,
            " (255 is the RFC's address owner, which pgvip never is; 0 means resigning)",
        )
        _require_int(where + "advert_int", self.advert_int, 1, MAX_ADVERT_INT, " centiseconds")
        if not isinstance(self.primary_address, IPv4Address | IPv6Address):
            raise ValueError(
                f"{where}primary_address must be an IPv4Address or IPv6Address, "
                f"got {self.primary_address!r}"
            )
        if isinstance(self.vips, list):
            object.__setattr__(self, "vips", tuple(self.vips))
        if not isinstance(self.vips, tuple) or not 1 <= len(self.vips) <= MAX_ADDRESSES:
            raise ValueError(
                f"{where}vips must hold 1..{MAX_ADDRESSES} interfaces, got {self.vips!r}"
            )
        version = self.primary_address.version
        for vip in self.vips:
            if not isinstance(vip, IPv4Interface | IPv6Interface) or vip.version != version:
                raise ValueError(
                    f"{where}every VIP must be an IPv{version} interface (like primary_address "
                    f"{self.primary_address}), got {vip!r}"
                )
        if len({vip.ip for vip in self.vips}) != len(self.vips):
            raise ValueError(f"{where}vips lists an address twice: {self.vips!r}")
        if not isinstance(self.preempt, bool):
            raise ValueError(f"{where}preempt must be a bool, got {self.preempt!r}")
        delay = self.preempt_delay
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
            or delay < 0
        ):
            raise ValueError(f"{where}preempt_delay must be >= 0 seconds, got {delay!r}")

    @property
    def advert_interval(self) -> float:
        """advert_int in seconds."""
        return self.advert_int / 100


def skew_time(priority: int, master_adver_interval: float) -> float:
    """RFC 5798 §6.1: higher priorities wait less, so concurrent backups resolve in order."""
    return ((256 - priority) * master_adver_interval) / 256


def master_down_interval(priority: int, master_adver_interval: float) -> float:
    """RFC 5798 §6.1: three missed adverts plus our skew."""
    return 3 * master_adver_interval + skew_time(priority, master_adver_interval)


@dataclass(frozen=True)
class _Heard:
    """The last advert heard from another router, in any state (feeds fast takeover)."""

    address: IPAddress
    priority: int
    interval: float  # seconds
    at: float


class _Input(enum.Enum):
    ADVERT = "advert"
    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"
    PRIORITY = "priority"
    TICK = "tick"
    SHUTDOWN = "shutdown"


def _input_of(event: Event) -> _Input:
    if isinstance(event, AdvertReceived):
        return _Input.ADVERT
    if isinstance(event, EligibilityChanged):
        return _Input.ELIGIBLE if event.eligible else _Input.INELIGIBLE
    if isinstance(event, PriorityChanged):
        return _Input.PRIORITY
    if isinstance(event, Tick):
        return _Input.TICK
    if isinstance(event, Shutdown):
        return _Input.SHUTDOWN
    raise TypeError(f"VrrpInstance.handle() got {event!r}, which is not a pgvip.vrrp event")


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f}s"


class VrrpInstance:
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

    def __init__(self, config: InstanceConfig, now: float) -> None:
        self._config = config
        # The effective priority: config.priority until a PriorityChanged says otherwise.
        self._priority = config.priority
        self._priority_reason = "configured"
        self._state = State.INIT
        self._created_at = now
        self._now = now
        self._stopped = False
        self._heard: _Heard | None = None
        self._master_adver_interval = config.advert_interval
        self._master_down_at: float | None = None  # Backup's Master_Down_Timer
        self._adver_at: float | None = None  # Master's Adver_Timer
        self._eligible_since: float | None = None
        self._became_master_at: float | None = None
        self._addresses: tuple[IPv4Address, ...] | tuple[IPv6Address, ...] = tuple(
            vip.ip for vip in config.vips
        )  # type: ignore[assignment]

    # -- the interface the daemon uses -------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to perform, in order."""
        kind = _input_of(event)
        if self._stopped:
            return []
        now = max(now, self._now)
        self._now = now
        if isinstance(event, AdvertReceived):
            if not self._is_ours(event):
                return []
            self._remember(event, now)
        return _TRANSITIONS[(self._state, kind)](self, event, now)

    def resume_after_resign(self, resigned_at: float) -> None:
        """Before any event: this node's previous run was master and resigned (priority 0) at
        `resigned_at`. Taken as a priority-0 advert heard from ourselves then, so becoming
        eligible takes over after Skew_Time instead of listening for a Master_Down_Interval,
        exactly as after another node's resign. Any advert heard later replaces it."""
        if self._state is State.INIT and self._heard is None:
            self._heard = _Heard(
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
    def skew_time(self) -> float:
        return skew_time(self._priority, self._master_adver_interval)

    @property
    def master_down_interval(self) -> float:
        return master_down_interval(self._priority, self._master_adver_interval)

    @property
    def became_master_at(self) -> float | None:
        """When the current MASTER period started; None when not MASTER."""
        return self._became_master_at

    def __repr__(self) -> str:
        return (
            f"<VrrpInstance {self.name} vrid={self._config.vrid} {self._state.name} "
            f"priority={self._priority}>"
        )

    # -- helpers ---------------------------------------------------------------------------

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
        self._heard = _Heard(event.src, advert.priority, advert.max_advert_int / 100, now)

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

    def _lower_master_alive(self, now: float) -> _Heard | None:
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

    # -- handlers, one per (state, input) cell of _TRANSITIONS ------------------------------

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
        if heard is None:
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
        self._adver_at = now + self._config.advert_interval
        return [SendAdvert(self._advert(own)), Announce()]

    def _master_tick(self, event: Tick, now: float) -> list[Action]:
        if self._adver_at is None or now < self._adver_at:
            return []
        interval = self._config.advert_interval
        following = self._adver_at + interval
        # Keep the cadence drift-free, but after a stall send one advert, not a burst.
        self._adver_at = following if following > now else now + interval
        return [SendAdvert(self._advert(self._priority))]


_Handler = Callable[[VrrpInstance, Any, float], list[Action]]

_I = _Input
_S = State
_TRANSITIONS: dict[tuple[State, _Input], _Handler] = {
    # INIT: not yet eligible; listen and remember the master.
    (_S.INIT, _I.ADVERT): VrrpInstance._listen,
    (_S.INIT, _I.ELIGIBLE): VrrpInstance._eligible,
    (_S.INIT, _I.INELIGIBLE): VrrpInstance._ineligible,
    (_S.INIT, _I.PRIORITY): VrrpInstance._store_priority,
    (_S.INIT, _I.TICK): VrrpInstance._ignore,
    (_S.INIT, _I.SHUTDOWN): VrrpInstance._shutdown,
    # FAULT: not eligible; listen and remember the master.
    (_S.FAULT, _I.ADVERT): VrrpInstance._listen,
    (_S.FAULT, _I.ELIGIBLE): VrrpInstance._eligible,
    (_S.FAULT, _I.INELIGIBLE): VrrpInstance._ignore,
    (_S.FAULT, _I.PRIORITY): VrrpInstance._store_priority,
    (_S.FAULT, _I.TICK): VrrpInstance._ignore,
    (_S.FAULT, _I.SHUTDOWN): VrrpInstance._shutdown,
    # BACKUP: RFC 5798 §6.4.2.
    (_S.BACKUP, _I.ADVERT): VrrpInstance._backup_advert,
    (_S.BACKUP, _I.ELIGIBLE): VrrpInstance._ignore,
    (_S.BACKUP, _I.INELIGIBLE): VrrpInstance._ineligible,
    (_S.BACKUP, _I.PRIORITY): VrrpInstance._backup_priority,
    (_S.BACKUP, _I.TICK): VrrpInstance._backup_tick,
    (_S.BACKUP, _I.SHUTDOWN): VrrpInstance._shutdown,
    # MASTER: RFC 5798 §6.4.3.
    (_S.MASTER, _I.ADVERT): VrrpInstance._master_advert,
    (_S.MASTER, _I.ELIGIBLE): VrrpInstance._ignore,
    (_S.MASTER, _I.INELIGIBLE): VrrpInstance._ineligible_master,
    (_S.MASTER, _I.PRIORITY): VrrpInstance._master_priority,
    (_S.MASTER, _I.TICK): VrrpInstance._master_tick,
    (_S.MASTER, _I.SHUTDOWN): VrrpInstance._shutdown_master,
}
