"""Outputs of the VRRP state machine: what the daemon must do, in the order given."""

from __future__ import annotations

from dataclasses import dataclass

from pgvip.vrrp.packet import Advert
from pgvip.vrrp.states import State

__all__ = ["Action", "AddVip", "Announce", "RemoveVip", "SendAdvert", "Transition"]


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


@dataclass(frozen=True)
class Transition:
    """The instance changed state; `reason` is human text meant to be logged as-is."""

    from_state: State
    to_state: State
    reason: str
    priority: int  # our own priority, as keepalived passes it to notify scripts

    def __str__(self) -> str:
        return f"{self.from_state.name} -> {self.to_state.name}: {self.reason}"


Action = SendAdvert | AddVip | RemoveVip | Announce | Transition
