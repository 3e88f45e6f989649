"""RFC 5798 §6.1's timer formulas, and the memory of the last advert heard, that the
state machine's deadlines are computed from."""

from __future__ import annotations

from dataclasses import dataclass

from pgvip.vrrp.packet import IPAddress

__all__ = ["Heard", "master_down_interval", "skew_time"]


def skew_time(priority: int, master_adver_interval: float) -> float:
    """RFC 5798 §6.1: higher priorities wait less, so concurrent backups resolve in order."""
    return ((256 - priority) * master_adver_interval) / 256


def master_down_interval(priority: int, master_adver_interval: float) -> float:
    """RFC 5798 §6.1: three missed adverts plus our skew."""
    return 3 * master_adver_interval + skew_time(priority, master_adver_interval)


@dataclass(frozen=True)
class Heard:
    """The last advert heard from another router, in any state (feeds fast takeover)."""

    address: IPAddress
    priority: int
    interval: float  # seconds
    at: float
