"""Outputs of the VRRP state machine: what the daemon must do, in the order given."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pgvip.vrrp.packet import Advert
from pgvip.vrrp.states import State

__all__ = [
    "Action",
    "AddVip",
    "Announce",
    "RemoveVip",
    "SendAdvert",
    "Transition",
    "TransitionKind",
]


@dataclass(frozen=True)
class SendAdvert:
    """Send this advert to the VRRP multicast group, or to each unicast peer."""

    advert: Advert


@dataclass(frozen=True)
class AddVip:
    """Configure the instance's VIPs on the interface."""


@dataclass(frozen=True)
class RemoveVip:
    """Remove the instance's VIPs from the interface."""


@dataclass(frozen=True)
class Announce:
    """Start a gratuitous ARP / unsolicited NA burst for the instance's VIPs."""


class TransitionKind(enum.Enum):
    """Why a transition happened, as a small fixed set: the metric label and the status
    API's `reason_kind` are these values, never the reason text (which carries addresses
    and timings). The state machine sets it where it decides the transition."""

    ELIGIBLE = "eligible"  # INIT/FAULT -> BACKUP
    INELIGIBLE = "ineligible"  # -> FAULT
    MASTER_DOWN = "master_down"  # BACKUP -> MASTER: no advert for Master_Down_Interval
    MASTER_RESIGNED = "master_resigned"  # BACKUP -> MASTER: the master sent priority 0
    PREEMPT = "preempt"  # BACKUP -> MASTER over a live lower-priority master
    HIGHER_PRIORITY = "higher_priority"  # MASTER -> BACKUP: a better master is advertising
    SHUTDOWN = "shutdown"  # -> INIT
    OTHER = "other"  # never produced by pgvip.vrrp; the default for hand-built transitions


@dataclass(frozen=True)
class Transition:
    """The instance changed state; `reason` is human text meant to be logged as-is, `kind`
    its bounded label."""

    from_state: State
    to_state: State
    reason: str
    priority: int  # our own priority, as keepalived passes it to notify scripts
    kind: TransitionKind = field(default=TransitionKind.OTHER, compare=False)

    def __str__(self) -> str:
        return f"{self.from_state.name} -> {self.to_state.name}: {self.reason}"


Action = SendAdvert | AddVip | RemoveVip | Announce | Transition
