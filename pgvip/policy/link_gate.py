"""Interface health as part of eligibility: a node whose VRRP interface is down (or has no
carrier) may not hold a VIP, whatever Patroni says.

keepalived does the same (an interface fault puts the instance in FAULT). Without it, a
holder whose link goes down stays MASTER, its reconciler re-adds the VIP that the kernel
just flushed, and once the link is back two nodes hold the VIP until the next advert.

Pure code: the daemon feeds it Patroni's eligibility decisions and link notifications and
forwards what it returns to the VRRP instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgvip.vrrp.events import EligibilityChanged


@dataclass(frozen=True)
class LinkState:
    up: bool  # administratively up (IFF_UP)
    carrier: bool  # lower layer up (IFF_LOWER_UP)
    present: bool = True  # False once the link was deleted

    @property
    def usable(self) -> bool:
        return self.present and self.up and self.carrier

    def describe(self, ifname: str) -> str:
        if not self.present:
            return f"interface {ifname} was removed"
        if not self.up:
            return f"interface {ifname} is down"
        if not self.carrier:
            return f"interface {ifname} has no carrier"
        return f"interface {ifname} is up"


class LinkGate:
    """Combines the latest Patroni eligibility with the state of the VRRP interface.

    Each method returns the EligibilityChanged the instance should see now, or None when
    nothing it would see changed. While the link is unusable, Patroni's decisions are
    remembered but not forwarded; the latest one is forwarded when the link comes back.
    """

    def __init__(self, ifname: str, link: LinkState | None = None) -> None:
        self.ifname = ifname
        self.link = link or LinkState(up=True, carrier=True)
        self._patroni: EligibilityChanged | None = None

    @property
    def link_usable(self) -> bool:
        return self.link.usable

    def patroni(self, event: EligibilityChanged) -> EligibilityChanged | None:
        self._patroni = event
        return event if self.link.usable else None

    def link_changed(self, link: LinkState) -> EligibilityChanged | None:
        was = self.link.usable
        self.link = link
        if link.usable == was:
            return None
        if not link.usable:
            return EligibilityChanged(eligible=False, reason=link.describe(self.ifname))
        if self._patroni is None:
            return None  # not yet polled: the first Patroni answer decides
        return EligibilityChanged(
            eligible=self._patroni.eligible,
            reason=f"{self._patroni.reason}; {link.describe(self.ifname)} again",
            relisten=True,
        )
