"""The L3 mode's counterpart of a VRRP instance: whether this node announces a VIP as a
host route. There is no election: Patroni's answer (through the eligibility policy) decides
alone, so the states are INIT, MASTER (announced) and FAULT (withdrawn). Pure: events in,
actions out, like pgvip.vrrp."""

from __future__ import annotations

from pgvip.vrrp.actions import Action, AddVip, RemoveVip, Transition, TransitionKind
from pgvip.vrrp.events import EligibilityChanged, Shutdown
from pgvip.vrrp.states import State

ROUTE_PRIORITY = 0  # no VRRP priority in L3 mode; notify scripts and metrics get 0


class RouteHolder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.INIT
        self.eligible = False
        self.reason = "not yet polled"
        self.since: float | None = None

    @property
    def announced(self) -> bool:
        return self.state is State.MASTER

    def handle(self, event: EligibilityChanged | Shutdown, now: float) -> list[Action]:
        if self.state is State.INIT and isinstance(event, Shutdown):
            return []
        if isinstance(event, Shutdown):
            return self._go(State.INIT, f"shutdown: {event.reason}", TransitionKind.SHUTDOWN, now)
        self.eligible, self.reason = event.eligible, event.reason
        if event.eligible and self.state is not State.MASTER:
            return self._go(State.MASTER, event.reason, TransitionKind.ELIGIBLE, now)
        if not event.eligible and self.state is not State.FAULT:
            return self._go(State.FAULT, event.reason, TransitionKind.INELIGIBLE, now)
        return []

    def _go(self, to: State, reason: str, kind: TransitionKind, now: float) -> list[Action]:
        was, self.state, self.since = self.state, to, now
        t = Transition(was, to, reason, ROUTE_PRIORITY, kind)
        if to is State.MASTER:
            return [AddVip(), t]
        return [RemoveVip(), t] if was is State.MASTER else [t]
