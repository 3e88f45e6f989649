"""PriorityChanged on a fake clock: the effective priority in every state, the immediate advert
of a MASTER, and an RO director handing over through ordinary preemption."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvip.vrrp.actions import AddVip, RemoveVip, SendAdvert, Transition
from pgvip.vrrp.events import (
    AdvertReceived,
    EligibilityChanged,
    Event,
    PriorityChanged,
    Shutdown,
    Tick,
)
from pgvip.vrrp.instance import State, VrrpInstance
from pgvip.vrrp.timers import master_down_interval, skew_time
from tests.unit.vrrp.netsim import FakeNetwork, Node, make_config, node_address
from tests.unit.vrrp.test_instance import ELIGIBLE, INELIGIBLE, advert, driver, heard, master

DELAY = 0.001
TO_LEADER = PriorityChanged(50, "Patroni role primary")
TO_REPLICA = PriorityChanged(150, "Patroni role replica")


def became(node: Node, state: State) -> list[float]:
    return [t for t, tr in node.transitions if tr.to_state is state]


# -- the event itself ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 255, -1, True, 1.5, "150"])
def test_priority_outside_1_to_254_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match=r"1\.\.254"):
        PriorityChanged(bad, "x")  # type: ignore[arg-type]


# -- INIT and FAULT: stored, nothing sent ----------------------------------------------------------


def test_init_stores_the_priority_and_becoming_eligible_uses_it() -> None:
    d = driver(150, created=0.0)
    assert d.at(10.0, TO_LEADER) == []
    assert d.instance.state is State.INIT and d.instance.next_deadline() is None
    assert d.instance.priority == 50 and d.instance.priority_reason == "Patroni role primary"
    actions = d.at(10.0, ELIGIBLE)
    assert isinstance(actions[0], Transition) and actions[0].priority == 50
    # Nothing heard for 10 s: takeover after Skew_Time of priority 50, not of 150.
    assert d.instance.next_deadline() == pytest.approx(10.0 + skew_time(50, 1.0))
    d.advance(20.0)
    sent = [a for _, a in d.log if isinstance(a, SendAdvert)]
    assert sent and all(a.advert.priority == 50 for a in sent)
    became_master = [
        a for _, a in d.log if isinstance(a, Transition) and a.to_state is State.MASTER
    ]
    assert [t.priority for t in became_master] == [50]
    assert d.instance.master_priority == 50


def test_fault_stores_the_priority_silently() -> None:
    d = driver(150)
    d.at(0.0, INELIGIBLE)
    assert d.instance.state is State.FAULT
    assert d.at(1.0, TO_LEADER) == []
    assert d.instance.state is State.FAULT and d.instance.next_deadline() is None
    assert d.instance.priority == 50
    assert d.instance.master_down_interval == pytest.approx(master_down_interval(50, 1.0))
    assert "priority=50" in repr(d.instance)


# -- BACKUP: the running timer stands, later timers use the new skew -------------------------------


def test_backup_keeps_its_timer_and_the_next_advert_uses_the_new_skew() -> None:
    d = driver(150)
    d.at(10.0, ELIGIBLE)
    d.at(10.5, heard(200, 2))
    assert d.instance.next_deadline() == pytest.approx(10.5 + master_down_interval(150, 1.0))
    assert d.at(11.0, TO_LEADER) == []
    assert d.instance.state is State.BACKUP
    assert d.instance.next_deadline() == pytest.approx(10.5 + master_down_interval(150, 1.0))
    d.at(11.5, heard(200, 2))
    assert d.instance.next_deadline() == pytest.approx(11.5 + master_down_interval(50, 1.0))
    d.at(13.0, heard(0, 2))
    assert d.instance.next_deadline() == pytest.approx(13.0 + skew_time(50, 1.0))


def test_backup_raised_above_a_live_master_preempts_it_when_its_timer_runs_out() -> None:
    d = driver(50)
    d.at(10.0, ELIGIBLE)
    d.adverts(100, 2, 10.0, 12.0)  # adverts at 10 and 11 are accepted (100 > 50)
    assert d.at(11.5, TO_REPLICA) == []
    d.adverts(100, 2, 12.0, 20.0)  # now discarded: 100 < 150
    assert d.became(State.MASTER) == [pytest.approx(11.0 + master_down_interval(50, 1.0))]
    assert d.instance.state is State.MASTER
    last = [a for _, a in d.log if isinstance(a, Transition)][-1]
    assert last.reason == "preempting 10.20.30.52: our priority 150 > its 100"
    assert last.priority == 150


def test_backup_lowered_below_the_master_it_was_preempting_follows_it_instead() -> None:
    # Backup at 150 discards a live master at 100 and would take over at 10 + MDI(150);
    # its priority drops to 50 just before. It must not "take over" from a live master.
    d = driver(150)
    d.at(10.0, heard(100, 2))
    d.at(10.0, ELIGIBLE)
    d.adverts(100, 2, 11.0, 13.4)  # discarded, but remembered: last one at 13.0
    assert d.instance.next_deadline() == pytest.approx(10.0 + master_down_interval(150, 1.0))
    assert d.at(13.3, TO_LEADER) == []
    assert d.instance.next_deadline() == pytest.approx(13.0 + master_down_interval(50, 1.0))
    d.adverts(100, 2, 14.0, 30.0)
    assert d.became(State.MASTER) == []
    assert d.instance.master_address == node_address(2)
    # And it still takes over once that master really goes silent.
    d.advance(40.0)
    assert d.became(State.MASTER) == [pytest.approx(29.0 + master_down_interval(50, 1.0))]


def test_backup_lowered_but_still_above_the_master_keeps_preempting() -> None:
    d = driver(150)
    d.at(10.0, heard(100, 2))
    d.at(10.0, ELIGIBLE)
    deadline = d.instance.next_deadline()
    d.at(11.0, PriorityChanged(120, "operator"))
    assert d.instance.next_deadline() == deadline
    d.adverts(100, 2, 11.0, 20.0)
    assert d.became(State.MASTER) == [pytest.approx(deadline)]


# -- MASTER: advertise the new priority at once ----------------------------------------------------


def test_master_advertises_a_new_priority_at_once_and_restarts_its_cadence() -> None:
    d = master(150)
    assert d.instance.priority == 150
    actions = d.at(7.3, TO_LEADER)
    assert actions == [SendAdvert(advert(50))]
    assert d.instance.state is State.MASTER and d.instance.holds_vips
    assert d.instance.master_priority == 50
    assert d.instance.next_deadline() == pytest.approx(8.3)
    d.advance(10.0)
    later = [(t, a.advert.priority) for t, a in d.log if isinstance(a, SendAdvert) and t > 7.3]
    assert later == [(pytest.approx(8.3), 50), (pytest.approx(9.3), 50)]


def test_an_unchanged_priority_is_a_no_op_everywhere() -> None:
    d = master(150)
    d.advance(7.0)
    cadence = d.instance.next_deadline()
    assert d.at(7.0, PriorityChanged(150, "again")) == []
    assert d.instance.priority_reason == "configured"
    assert d.instance.next_deadline() == cadence
    b = driver(150)
    b.at(0.0, ELIGIBLE)
    deadline = b.instance.next_deadline()
    assert b.at(1.0, PriorityChanged(150, "again")) == []
    assert b.instance.next_deadline() == deadline


def test_lowered_master_yields_to_a_backup_it_now_ranks_below() -> None:
    d = master(150)
    d.at(7.0, TO_LEADER)
    actions = d.at(7.5, heard(100, 2))
    assert [type(a) for a in actions] == [RemoveVip, Transition]
    transition = actions[1]
    assert isinstance(transition, Transition)
    assert transition.reason == "master 10.20.30.52 has higher priority 100 > 50"
    assert transition.priority == 50


def test_stopped_instance_ignores_priority_changes() -> None:
    d = master(150)
    d.at(7.0, Shutdown("SIGTERM"))
    assert d.instance.handle(TO_LEADER, 8.0) == []
    assert d.instance.priority == 150


# -- the RO scenario on a fake segment -------------------------------------------------------------


def test_leader_director_dropping_to_50_hands_the_vip_to_a_replica_at_150() -> None:
    # p2 (higher address) is the director at 150; p1 joins as a replica at 150 and follows it.
    net = FakeNetwork(delay=DELAY)
    p2 = net.add(make_config(2, 150))
    net.set_eligible("p2")
    net.run_until(5.0)
    p1 = net.add(make_config(1, 150))
    net.set_eligible("p1")
    net.run_until(20.0)
    assert net.holders() == ["p2"] and p1.instance.state is State.BACKUP

    # A switchover makes p2 Patroni's leader: RoleWatch lowers its RO priority.
    actions = net.feed("p2", TO_LEADER)
    assert [a.advert.priority for a in actions if isinstance(a, SendAdvert)] == [50]
    last_150 = max(
        t for t, a in p2.actions if isinstance(a, SendAdvert) and a.advert.priority == 150
    )
    net.run_until(30.0)

    assert net.holders() == ["p1"]
    takeover = became(p1, State.MASTER)
    assert takeover == [pytest.approx(last_150 + DELAY + master_down_interval(150, 1.0))]
    assert p1.transitions[-1][1].reason == "preempting 10.20.30.52: our priority 150 > its 50"
    assert became(p2, State.BACKUP)[-1] == pytest.approx(takeover[0] + DELAY)
    assert p2.transitions[-1][1].priority == 50
    # Only the usual one-delay overlap of a preemption; the new director is never contested.
    assert [round(end - start, 6) for start, end in net.overlaps] == [DELAY]
    assert net.violations == []

    # p2 becomes a replica again: back at 150, it follows p1 (equal priority, no preemption).
    net.feed("p2", TO_REPLICA)
    net.run_until(60.0)
    assert net.holders() == ["p1"] and p2.instance.state is State.BACKUP
    assert net.violations == []


def test_a_replica_without_preempt_does_not_take_over_from_a_lowered_director() -> None:
    net = FakeNetwork(delay=DELAY)
    net.add(make_config(2, 150))
    net.set_eligible("p2")
    net.run_until(5.0)
    p1 = net.add(make_config(1, 150, preempt=False))
    net.set_eligible("p1")
    net.run_until(20.0)
    net.feed("p2", TO_LEADER)
    net.run_until(40.0)
    assert net.holders() == ["p2"] and p1.instance.state is State.BACKUP
    assert net.violations == []


# -- arbitrary sequences with priority changes -----------------------------------------------------

events = st.one_of(
    st.builds(
        AdvertReceived,
        st.builds(advert, st.integers(0, 254), st.sampled_from([20, 100, 300])),
        st.sampled_from([node_address(i) for i in (1, 2, 3)]),
    ),
    st.builds(EligibilityChanged, st.booleans(), st.just("policy")),
    st.builds(PriorityChanged, st.sampled_from([1, 50, 150, 254]), st.just("role")),
    st.just(Tick()),
    st.just(Shutdown("SIGTERM")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), events, st.booleans()), max_size=60))
def test_adverts_and_transitions_always_carry_the_current_priority(
    steps: list[tuple[float, Event, bool]],
) -> None:
    instance = VrrpInstance(make_config(2, 150), 0.0)
    now, holding = 0.0, False
    for gap, event, at_deadline in steps:
        deadline = instance.next_deadline()
        if isinstance(event, Tick) and at_deadline and deadline is not None:
            now = max(now, deadline)
        else:
            now += gap
        before = instance.state
        actions = instance.handle(event, now)
        for action in actions:
            if isinstance(action, AddVip):
                assert not holding
                holding = True
            elif isinstance(action, RemoveVip):
                holding = False
            elif isinstance(action, SendAdvert):
                assert action.advert.priority in (0, instance.priority)
            elif isinstance(action, Transition):
                assert action.priority == instance.priority
        if isinstance(event, PriorityChanged) and not instance.stopped:
            assert instance.priority == event.priority
            assert instance.state is before  # a priority change never changes state by itself
            sent = [a for a in actions if isinstance(a, SendAdvert)]
            assert len(sent) <= 1 and (not sent or before is State.MASTER)
        assert holding == (instance.state is State.MASTER)
        following = instance.next_deadline()
        assert following is None or following > now or not isinstance(event, Tick)
