"""What one VRRP instance is configured with, validated on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from pgvip.ranges import require_int
from pgvip.vrrp.packet import MAX_ADDRESSES, MAX_ADVERT_INT, IPAddress

__all__ = ["InstanceConfig", "VipInterface"]

VipInterface = IPv4Interface | IPv6Interface


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
    # After our link was down (EligibilityChanged.relisten), listen a full
    # Master_Down_Interval before claiming: several nodes may be eligible at once (the RO
    # VIP). The RW VIP's only eligible node is Patroni's leader, which need not wait.
    relisten_after_link: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"instance name must be a non-empty string, got {self.name!r}")
        where = f"instance {self.name!r}: "
        require_int(where + "vrid", self.vrid, 1, 255)
        require_int(
            where + "priority",
            self.priority,
            1,
            254,
            hint=" (255 is the RFC's address owner, which pgvip never is; 0 means resigning)",
        )
        require_int(where + "advert_int", self.advert_int, 1, MAX_ADVERT_INT, hint=" centiseconds")
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
