"""Several VrrpInstances on one fake segment: the seed's keepalived scenarios, and random walks
checking that two nodes never hold the VIP at the same simulated instant."""

from __future__ import annotations

import random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pgvip.vrrp.actions import Announce, RemoveVip, SendAdvert, Transition
from pgvip.vrrp.instance import State
from pgvip.vrrp.timers import master_down_interval, skew_time
from tests.unit.vrrp.netsim import FakeNetwork, Node, make_config

DELAY = 0.001


def became(node: Node, state: State) -> list[float]:
    return [t for t, tr in node.transitions if tr.to_state is state]


def last_reason(node: Node) -> str:
    return node.transitions[-1][1].reason


# -- the seed's keepalived logs, replayed ----------------------------------------------------------


def test_backup_starting_first_yields_to_a_higher_priority_master() -> None:
    # seed, Jan 27 16:02: p1 starts alone and takes the VIP; p2 (higher) joins and takes it.
    net = FakeNetwork(delay=DELAY)
    p1 = net.add(make_config(1, 150))
    net.set_eligible("p1")
    net.run_until(5.0)
    assert became(p1, State.MASTER) == [pytest.approx(3 + 106 / 256)]

    p2 = net.add(make_config(2, 200))
    net.set_eligible("p2")
    net.run_until(30.0)
    assert became(p2, State.MASTER) == [pytest.approx(5.0 + 3 + 56 / 256)]
    assert last_reason(p2) == "preempting 10.20.30.51: our priority 200 > its 150"
    assert became(p1, State.BACKUP)[-1] == pytest.approx(5.0 + 3 + 56 / 256 + DELAY)
    assert last_reason(p1) == "master 10.20.30.52 has higher priority 200 > 150"
    assert net.holders() == ["p2"]
    # Preemption between two eligible nodes overlaps for one network delay, as in VRRP itself.
    assert [round(end - start, 6) for start, end in net.overlaps] == [DELAY]
    assert net.violations == []


def test_master_stopping_sends_priority_zero_and_backup_takes_over_after_skew() -> None:
    # seed, Jan 27 15:54:16: "sent 0 priority" on p2, p1 MASTER within the same second.
    net = FakeNetwork(delay=DELAY)
    net.add(make_config(2, 200))
    p1 = net.add(make_config(1, 150))
    net.set_eligible("p2")
    net.run_until(1.0)
    net.set_eligible("p1")
    net.run_until(20.0)
    assert net.holders() == ["p2"] and p1.instance.state is State.BACKUP

    actions = net.shutdown("p2", "SIGTERM")
    assert [type(a) for a in actions] == [RemoveVip, SendAdvert, Transition]
    assert isinstance(actions[1], SendAdvert) and actions[1].advert.priority == 0
    net.run_until(25.0)
    assert became(p1, State.MASTER) == [pytest.approx(20.0 + DELAY + 106 / 256)]
    assert last_reason(p1) == "priority 0 from 10.20.30.52"
    assert net.overlaps == [] and net.violations == []


@pytest.mark.parametrize("new_leader_lag", [0.2, 0.0, -0.1])
def test_switchover_from_fault_takes_skew_time_not_master_down(new_leader_lag: float) -> None:
    # seed, Jan 28 11:44:39: keepalived's p2 went FAULT -> BACKUP -> MASTER in 3 s.
    # Patroni flips /primary on the old leader ~0.2 s before the new one (platform notes);
    # the negative lag covers a policy that notices the new leader first.
    net = FakeNetwork(delay=DELAY)
    p1 = net.add(make_config(1, 200))
    p2 = net.add(make_config(2, 200))
    net.set_eligible("p1")
    net.set_eligible("p2", False)
    net.run_until(100.0 + min(new_leader_lag, 0.0))
    if new_leader_lag < 0:
        net.set_eligible("p2")
    net.run_until(100.0)

    actions = net.set_eligible("p1", False)
    assert [type(a) for a in actions] == [RemoveVip, SendAdvert, Transition]
    if new_leader_lag >= 0:
        net.run_until(100.0 + new_leader_lag)
        net.set_eligible("p2")
    net.run_until(110.0)

    [took_over] = became(p2, State.MASTER)
    assert took_over - 100.0 < 0.5  # keepalived: ~3.05 s
    assert took_over == pytest.approx(100.0 + max(new_leader_lag, DELAY) + 56 / 256)
    assert p1.instance.state is State.FAULT
    assert net.holders() == ["p2"] and net.overlaps == [] and net.violations == []


def test_leader_vanishing_without_priority_zero() -> None:
    # kill -9 / power loss: the old master just stops advertising (the node goes away with it).
    net = FakeNetwork(delay=DELAY)
    p1 = net.add(make_config(1, 200))
    p2 = net.add(make_config(2, 200))
    net.set_eligible("p1")
    net.set_eligible("p2", False)
    net.run_until(99.5)
    assert net.holders() == ["p1"]
    last_advert = max(t for t, a in p1.actions if isinstance(a, SendAdvert))
    p1.alive, p1.holding = False, False
    net.run_until(100.0 + 20.2)  # Patroni's own failover takes ~ttl
    net.set_eligible("p2")
    net.run_until(130.0)
    assert became(p2, State.MASTER) == [pytest.approx(120.2 + 56 / 256)]
    assert last_advert < 100.0


def test_equal_priorities_starting_together_converge_on_the_higher_address() -> None:
    net = FakeNetwork(delay=DELAY)
    for index in (1, 2, 3):
        net.add(make_config(index, 150))
        net.set_eligible(f"p{index}")
    net.run_until(30.0)
    assert net.holders() == ["p3"]
    assert all(end - start <= 2 * DELAY + 1e-9 for start, end in net.overlaps)
    assert net.violations == []


def test_split_brain_heals_to_the_higher_priority() -> None:
    net = FakeNetwork(delay=DELAY)
    p1 = net.add(make_config(1, 150))  # adverts at x.414 once master
    p2 = net.add(make_config(2, 200))  # adverts at x.219
    net.connected = False
    net.set_eligible("p1")
    net.set_eligible("p2")
    net.run_until(10.3)
    assert net.holders() == ["p1", "p2"]  # a partition: both hold, as with keepalived
    net.connected = True
    net.run_until(12.0)
    assert net.holders() == ["p2"]
    # p1's advert at 10.414 is the first across: p2 answers at once and re-announces the VIP.
    healed = [(t, type(a)) for t, a in p2.actions if t > 10.3]
    assert healed[:2] == [
        (pytest.approx(10.414 + DELAY, abs=1e-3), SendAdvert),
        (pytest.approx(10.414 + DELAY, abs=1e-3), Announce),
    ]
    assert became(p1, State.BACKUP)[-1] == pytest.approx(10.414 + 2 * DELAY, abs=1e-3)
    assert last_reason(p1) == "master 10.20.30.52 has higher priority 200 > 150"
    assert net.violations == []


# -- random walks ----------------------------------------------------------------------------------


@st.composite
def clusters(draw: st.DrawFn, *, same_interval: bool = False):
    size = draw(st.integers(2, 3))
    interval = draw(st.sampled_from([20, 50, 100]))
    configs = []
    for index in range(1, size + 1):
        configs.append(
            make_config(
                index,
                draw(st.integers(1, 254)),
                advert_int=interval if same_interval else draw(st.sampled_from([20, 50, 100])),
                preempt=draw(st.booleans()),
                preempt_delay=draw(st.sampled_from([0.0, 0.0, 0.5, 5.0])),
            )
        )
    return configs


handovers = st.tuples(
    st.sampled_from(["handover", "handover", "handover", "restart", "nobody"]),
    st.integers(0, 2),  # the next leader (modulo the cluster size)
    st.floats(0.0, 1.5),  # gap between the old leader's loss and the new leader's gain
    st.floats(0.05, 12.0),  # how long the new arrangement lasts
)


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(handovers, min_size=1, max_size=12), st.integers(0, 2**32))
def test_one_eligible_leader_at_a_time_never_gives_two_holders(configs, steps, seed) -> None:
    rng = random.Random(seed)
    max_delay = 0.005
    net = FakeNetwork(delay=lambda: rng.uniform(0.0001, max_delay), rng=rng)
    by_name = {config.name: config for config in configs}
    created = dict.fromkeys(by_name, 0.0)
    for config in configs:
        net.add(config)
        if rng.random() < 0.5:
            net.set_eligible(config.name, False)  # else it stays in INIT until it is leader
    slowest = max(config.advert_interval for config in configs)
    settle = 4 * slowest + 2 * max_delay + 1e-6  # >= any Master_Down_Interval, plus the wire
    leader: str | None = None
    eligible_at = 0.0
    for kind, pick, gap, hold in steps:
        name = configs[pick % len(configs)].name
        if kind == "restart":
            net.shutdown(name)
            net.run_for(gap)
            net.add(by_name[name])
            created[name] = net.now
            if name == leader:
                net.set_eligible(name)
                eligible_at = net.now
        else:
            if leader is not None:
                net.set_eligible(leader, False)
                assert net.holders() == []  # resigning is synchronous
                leader = None
            net.run_for(gap)
            if kind == "handover":
                leader = name
                net.set_eligible(leader)
                eligible_at = net.now
        net.run_for(hold)
        assert net.violations == []
        assert net.overlaps == [], f"two holders during {net.overlaps}"
        if leader is None:
            assert net.holders() == []
        elif net.now >= max(eligible_at, created[leader]) + settle:
            assert net.holders() == [leader], f"{leader} should hold by now ({net.now:.3f})"
            event("liveness checked")
    assert net.holders() in ([], [leader])


@settings(max_examples=150, deadline=None)
@given(
    clusters(same_interval=True),
    st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.floats(0.0, 6.0)), max_size=25),
    st.integers(0, 2**32),
)
def test_many_eligible_converge_on_the_highest_priority(configs, flips, seed) -> None:
    # Not Patroni's normal case (one leader), but a misconfiguration must still converge,
    # and a double holder may last only as long as adverts take to cross the wire.
    configs = [
        make_config(i + 1, c.priority, advert_int=c.advert_int) for i, c in enumerate(configs)
    ]
    rng = random.Random(seed)
    max_delay = 0.005
    net = FakeNetwork(delay=lambda: rng.uniform(0.0001, max_delay), rng=rng)
    for config in configs:
        net.add(config)
    eligible: set[str] = set()
    for pick, value, hold in flips:
        name = configs[pick % len(configs)].name
        net.set_eligible(name, value)
        (eligible.add if value else eligible.discard)(name)
        net.run_for(hold)
    interval = configs[0].advert_interval
    net.run_for(max(master_down_interval(c.priority, interval) for c in configs) + 3 * max_delay)
    assert net.violations == []
    assert all(end - start <= 2 * max_delay + 1e-9 for start, end in net.overlaps), net.overlaps
    holders = net.holders()
    if not eligible:
        assert holders == []
    else:
        assert len(holders) == 1
        event(f"{len(eligible)} eligible at the end")
        best = max(net.nodes[name].config.priority for name in eligible)
        assert net.nodes[holders[0]].config.priority == best
        assert holders[0] in eligible


def test_skew_orders_backups_after_a_resignation() -> None:
    # Two backups hear the same priority 0: the higher priority's shorter skew wins cleanly.
    net = FakeNetwork(delay=DELAY)
    for index, priority in ((1, 250), (2, 100), (3, 200)):
        net.add(make_config(index, priority))
        net.set_eligible(f"p{index}")
    net.run_until(10.0)
    assert net.holders() == ["p1"]
    net.shutdown("p1")
    net.run_until(20.0)
    assert net.holders() == ["p3"]
    assert became(net.nodes["p3"], State.MASTER)[-1] == pytest.approx(
        10.0 + DELAY + skew_time(200, 1.0)
    )
    assert became(net.nodes["p2"], State.MASTER) == []
    assert net.overlaps == [] and net.violations == []
