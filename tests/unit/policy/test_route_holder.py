"""The L3 route holder: Patroni's eligibility alone decides announce or withdraw."""

from __future__ import annotations

from pgvip.policy.route_holder import RouteHolder
from pgvip.vrrp.actions import AddVip, RemoveVip, Transition, TransitionKind
from pgvip.vrrp.events import EligibilityChanged, Shutdown
from pgvip.vrrp.states import State


def _kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


def test_eligible_announces_and_ineligible_withdraws() -> None:
    h = RouteHolder("rw")
    actions = h.handle(EligibilityChanged(True, "/primary 200"), 1.0)
    assert _kinds(actions) == [AddVip, Transition]
    t = actions[1]
    assert isinstance(t, Transition) and t.to_state is State.MASTER
    assert t.kind is TransitionKind.ELIGIBLE and h.announced and h.since == 1.0
    actions = h.handle(EligibilityChanged(False, "/primary 503"), 2.0)
    assert _kinds(actions) == [RemoveVip, Transition]
    assert h.state is State.FAULT and not h.announced and h.reason == "/primary 503"


def test_a_replica_starts_in_fault_without_touching_the_address() -> None:
    h = RouteHolder("rw")
    actions = h.handle(EligibilityChanged(False, "/primary 503"), 0.0)
    assert _kinds(actions) == [Transition]
    assert h.handle(EligibilityChanged(False, "/primary 503"), 1.0) == []


def test_repeated_eligibility_is_idempotent() -> None:
    h = RouteHolder("ro")
    h.handle(EligibilityChanged(True, "healthy replica"), 0.0)
    assert h.handle(EligibilityChanged(True, "healthy replica"), 1.0) == []


def test_shutdown_withdraws_only_what_was_announced() -> None:
    h = RouteHolder("rw")
    assert h.handle(Shutdown("SIGTERM"), 0.0) == []
    h.handle(EligibilityChanged(True, "/primary 200"), 0.0)
    actions = h.handle(Shutdown("SIGTERM"), 1.0)
    assert _kinds(actions) == [RemoveVip, Transition]
    assert h.state is State.INIT
    h2 = RouteHolder("rw")
    h2.handle(EligibilityChanged(False, "/primary 503"), 0.0)
    assert _kinds(h2.handle(Shutdown("SIGTERM"), 1.0)) == [Transition]
