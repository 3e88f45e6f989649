"""Every transition the state machine makes carries the kind that matches its move, set
where the move is decided; no caller ever parses the reason text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pgvip.vrrp.actions import Transition, TransitionKind
from pgvip.vrrp.events import Event, PriorityChanged, Tick
from pgvip.vrrp.instance import VrrpInstance
from pgvip.vrrp.states import State
from tests.unit.vrrp.netsim import make_config
from tests.unit.vrrp.test_instance import events

MOVES: dict[tuple[State, State], set[TransitionKind]] = {
    (State.INIT, State.BACKUP): {TransitionKind.ELIGIBLE},
    (State.FAULT, State.BACKUP): {TransitionKind.ELIGIBLE},
    (State.BACKUP, State.MASTER): {
        TransitionKind.MASTER_DOWN,
        TransitionKind.MASTER_RESIGNED,
        TransitionKind.PREEMPT,
    },
    (State.MASTER, State.BACKUP): {TransitionKind.HIGHER_PRIORITY},
}


def _allowed(t: Transition) -> set[TransitionKind]:
    if t.to_state is State.FAULT:
        return {TransitionKind.INELIGIBLE}
    if t.to_state is State.INIT:
        return {TransitionKind.SHUTDOWN}
    return MOVES.get((t.from_state, t.to_state), set())


with_priority = st.one_of(events, st.builds(PriorityChanged, st.integers(1, 254), st.just("r")))


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 254),
    st.booleans(),
    st.sampled_from([0.0, 2.0]),
    st.lists(st.tuples(st.floats(0, 5), with_priority, st.booleans()), max_size=60),
)
def test_every_transition_has_the_kind_of_its_move(
    priority: int, preempt: bool, delay: float, steps: list[tuple[float, Event, bool]]
) -> None:
    instance = VrrpInstance(make_config(2, priority, preempt=preempt, preempt_delay=delay), 0.0)
    now = 0.0
    for gap, event, at_deadline in steps:
        deadline = instance.next_deadline()
        if isinstance(event, Tick) and at_deadline and deadline is not None:
            now = max(now, deadline)
        else:
            now += gap
        for action in instance.handle(event, now):
            if isinstance(action, Transition):
                assert action.kind in _allowed(action), action
                assert action.kind is not TransitionKind.OTHER


def test_the_kind_does_not_take_part_in_equality() -> None:
    """Hand-built transitions (tests, listeners) compare by state, reason and priority."""
    a = Transition(State.BACKUP, State.MASTER, "x", 150, TransitionKind.MASTER_DOWN)
    assert a == Transition(State.BACKUP, State.MASTER, "x", 150)
