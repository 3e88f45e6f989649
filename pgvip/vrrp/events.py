"""Inputs of the VRRP state machine: what the daemon feeds `VrrpInstance.handle`."""

from __future__ import annotations

from dataclasses import dataclass

from pgvip.ranges import require_int
from pgvip.vrrp.packet import Advert, IPAddress
from pgvip.vrrp.states import State

__all__ = [
    "AdvertReceived",
    "EligibilityChanged",
    "Event",
    "PriorityChanged",
    "Shutdown",
    "State",
    "Tick",
]


@dataclass(frozen=True)
class AdvertReceived:
    """A decoded advertisement from another router; `src` is its primary address."""

    advert: Advert
    src: IPAddress


@dataclass(frozen=True)
class EligibilityChanged:
    """Whether this node may hold the VIP (for the RW VIP: it is Patroni's leader)."""

    eligible: bool
    reason: str  # human text from the policy, e.g. "/primary 503"
    # The interface was unusable until now: what was (not) heard meanwhile proves nothing
    # about a master, so a Backup listens afresh (InstanceConfig.relisten_after_link).
    relisten: bool = False


@dataclass(frozen=True)
class PriorityChanged:
    """Our own priority changes (for the RO VIP: this node became Patroni's leader or a replica).

    Raises ValueError outside 1..254: 0 is reserved for resigning and 255 for the address owner.
    """

    priority: int
    reason: str  # human text, e.g. "Patroni role replica"

    def __post_init__(self) -> None:
        require_int(
            "PriorityChanged priority",
            self.priority,
            1,
            254,
            hint=" (0 means resigning, 255 is the address owner)",
        )


@dataclass(frozen=True)
class Tick:
    """Time passed: deliver when now >= `VrrpInstance.next_deadline()`; early ticks are harmless."""


@dataclass(frozen=True)
class Shutdown:
    """The daemon is stopping: resign if master, then ignore everything."""

    reason: str  # e.g. "SIGTERM"


Event = AdvertReceived | EligibilityChanged | PriorityChanged | Tick | Shutdown
