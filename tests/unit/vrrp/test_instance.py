"""VrrpInstance on a fake clock: RFC timers, fast takeover, preemption, resignation order."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvip.vrrp.actions import Action, AddVip, Announce, RemoveVip, SendAdvert, Transition
from pgvip.vrrp.events import AdvertReceived, EligibilityChanged, Event, Shutdown, Tick
from pgvip.vrrp.instance import State, VrrpInstance
from pgvip.vrrp.instance_config import InstanceConfig
from pgvip.vrrp.packet import Advert
from pgvip.vrrp.timers import master_down_interval, skew_time
from tests.unit.vrrp.netsim import VIP, VRID, make_config, node_address

SKEW_150 = 106 / 256  # (256 - 150) * 1 s / 256
MDI_150 = 3 + SKEW_150
SKEW_200 = 56 / 256
MDI_200 = 3 + SKEW_200


def advert(priority: int, interval: int = 100, vrid: int = VRID) -> Advert:
    return Advert(vrid, priority, interval, (VIP.ip,))


def heard(priority: int, index: int, interval: int = 100) -> AdvertReceived:
    return AdvertReceived(advert(priority, interval), node_address(index))


ELIGIBLE = EligibilityChanged(True, "/primary 200")
INELIGIBLE = EligibilityChanged(False, "/primary 503")


class Driver:
    """Feeds one instance events at given times, delivering due Ticks in between like the daemon."""

    def __init__(self, instance: VrrpInstance) -> None:
        self.instance = instance
        self.log: list[tuple[float, Action]] = []
        self.now = 0.0

    def advance(self, until: float) -> None:
        while (deadline := self.instance.next_deadline()) is not None and deadline <= until:
            self.now = deadline
            self._record(self.instance.handle(Tick(), deadline))
        self.now = until

    def at(self, when: float, event: Event) -> list[Action]:
        self.advance(when)
        actions = self.instance.handle(event, when)
        self._record(actions)
        return actions

    def adverts(self, priority: int, index: int, start: float, end: float, every: float = 1.0):
        when = start
        while when < end:
            self.at(when, heard(priority, index))
            when += every

    def transitions(self) -> list[tuple[float, Transition]]:
        return [(t, a) for t, a in self.log if isinstance(a, Transition)]

    def became(self, state: State) -> list[float]:
        return [t for t, a in self.transitions() if a.to_state is state]

    def _record(self, actions: list[Action]) -> None:
        self.log.extend((self.now, action) for action in actions)


def driver(priority: int = 150, index: int = 1, created: float = 0.0, **kw) -> Driver:
    d = Driver(VrrpInstance(make_config(index, priority, **kw), created))
    d.now = created
    return d


def kinds(actions: list[Action]) -> list[type]:
    return [type(action) for action in actions]


def only_transition(actions: list[Action]) -> Transition:
    assert len(actions) == 1 and isinstance(actions[0], Transition), actions
    return actions[0]


def reason_of(action: Action) -> str:
    assert isinstance(action, Transition), action
    return action.reason


# -- the RFC's arithmetic --------------------------------------------------------------------------


def test_skew_and_master_down_interval_follow_rfc_5798() -> None:
    assert skew_time(150, 1.0) == pytest.approx(SKEW_150)
    assert master_down_interval(150, 1.0) == pytest.approx(MDI_150)
    assert master_down_interval(200, 0.5) == pytest.approx(1.5 + 56 * 0.5 / 256)


# -- start-up --------------------------------------------------------------------------------------


def test_starts_in_init_ineligible_and_silent() -> None:
    instance = VrrpInstance(make_config(1, 150), 0.0)
    assert instance.state is State.INIT
    assert not instance.eligible and not instance.holds_vips
    assert instance.next_deadline() is None
    assert instance.handle(Tick(), 100.0) == []
    assert instance.master_address is None and instance.last_advert_at is None
    assert instance.vips == (VIP,)


def test_first_ineligibility_moves_init_to_fault() -> None:
    instance = VrrpInstance(make_config(1, 150), 0.0)
    actions = instance.handle(INELIGIBLE, 0.5)
    assert actions == [Transition(State.INIT, State.FAULT, "ineligible: /primary 503", 150)]
    assert instance.handle(INELIGIBLE, 0.6) == []  # already FAULT: nothing to say
    assert instance.next_deadline() is None


def test_eligible_at_creation_waits_a_full_master_down_interval() -> None:
    d = driver(150)
    transition = only_transition(d.at(0.0, ELIGIBLE))
    assert (transition.from_state, transition.to_state) == (State.INIT, State.BACKUP)
    assert "no master heard yet" in transition.reason
    assert d.instance.next_deadline() == pytest.approx(MDI_150)
    d.advance(MDI_150 - 0.001)
    assert d.instance.state is State.BACKUP
    d.advance(10.0)
    assert d.became(State.MASTER) == [pytest.approx(MDI_150)]
    taking_over = [a for t, a in d.log if t == pytest.approx(MDI_150)]
    assert kinds(taking_over) == [AddVip, Announce, SendAdvert, Transition]
    assert taking_over[2] == SendAdvert(advert(150))
    assert reason_of(taking_over[3]) == "master down: no advert for 3.41s"
    assert d.instance.became_master_at == pytest.approx(MDI_150)
    assert d.instance.master_address == node_address(1)
    assert d.instance.master_priority == 150


def test_eligible_during_start_up_still_waits_from_creation() -> None:
    d = driver(150)
    d.at(2.0, ELIGIBLE)
    assert d.instance.next_deadline() == pytest.approx(MDI_150)  # created_at + MDI, not 2 + MDI


def test_eligible_after_listening_long_enough_takes_over_after_skew() -> None:
    d = driver(150)
    d.at(1.0, INELIGIBLE)
    transition = only_transition(d.at(10.0, ELIGIBLE))
    assert "no master heard for 10.00s" in transition.reason
    assert d.instance.next_deadline() == pytest.approx(10.0 + SKEW_150)


# -- fast takeover from FAULT ----------------------------------------------------------------------


def test_fault_remembers_priority_zero_and_takes_over_after_skew() -> None:
    d = driver(200, index=2)
    d.at(0.0, INELIGIBLE)
    d.adverts(200, 1, start=0.5, end=50.0)  # a live master, heard while we are FAULT
    d.at(50.0, heard(0, 1))  # ... which resigns
    transition = only_transition(d.at(50.2, ELIGIBLE))
    assert "10.20.30.51 resigned (priority 0)" in transition.reason
    d.advance(60.0)
    assert d.became(State.MASTER) == [pytest.approx(50.2 + SKEW_200)]
    assert d.transitions()[-1][1].reason == "priority 0 from 10.20.30.51"


def test_fault_with_live_master_waits_only_the_rest_of_the_interval() -> None:
    d = driver(150)
    d.at(0.0, INELIGIBLE)
    d.adverts(200, 2, start=0.5, end=10.0)  # last heard at 9.5, then the master dies silently
    transition = only_transition(d.at(10.0, ELIGIBLE))
    assert "master 10.20.30.52 (higher priority 200) heard 0.50s ago" in transition.reason
    assert d.instance.next_deadline() == pytest.approx(9.5 + MDI_150)  # not 10 + MDI
    d.advance(20.0)
    assert d.became(State.MASTER) == [pytest.approx(9.5 + MDI_150)]
    assert d.transitions()[-1][1].reason == "master down: no advert for 3.41s"


def test_fault_with_live_master_that_keeps_advertising_never_takes_over() -> None:
    d = driver(150)
    d.at(0.0, INELIGIBLE)
    d.adverts(200, 2, start=0.5, end=10.0)
    d.at(10.0, ELIGIBLE)
    d.adverts(200, 2, start=10.5, end=100.0)
    d.advance(100.0)
    assert d.became(State.MASTER) == []
    assert d.instance.next_deadline() == pytest.approx(99.5 + MDI_150)


def test_fault_with_stale_master_takes_over_after_skew() -> None:
    d = driver(150)
    d.at(0.0, INELIGIBLE)
    d.adverts(200, 2, start=0.5, end=10.0)
    transition = only_transition(d.at(20.0, ELIGIBLE))
    assert "no master heard for 10.50s (last was 10.20.30.52)" in transition.reason
    assert d.instance.next_deadline() == pytest.approx(20.0 + SKEW_150)


def test_after_a_link_fault_a_backup_listens_a_full_interval_before_claiming() -> None:
    """Its link was down, so it heard nobody: that silence proves no master is gone. With
    relisten it waits Master_Down_Interval and, hearing the master, never claims."""
    d = driver(150)
    d.at(0.0, INELIGIBLE)
    d.at(20.0, EligibilityChanged(True, "/patroni running; eth0 is up again", relisten=True))
    assert d.instance.next_deadline() == pytest.approx(20.0 + MDI_150)
    assert "the link was down: listening" in d.transitions()[-1][1].reason
    d.adverts(150, 2, start=20.5, end=40.0)  # the master that kept the VIP meanwhile
    d.advance(40.0)
    assert d.became(State.MASTER) == []


def test_without_relisten_after_link_the_silence_counts() -> None:
    """The RW VIP's instance (relisten_after_link False): its only eligible node is Patroni's
    leader, which takes the VIP back after Skew_Time."""
    d = Driver(VrrpInstance(replace(make_config(1, 150), relisten_after_link=False), 0.0))
    d.at(0.0, INELIGIBLE)
    d.at(20.0, EligibilityChanged(True, "/primary 200; eth0 is up again", relisten=True))
    assert d.instance.next_deadline() == pytest.approx(20.0 + SKEW_150)


def test_fault_learns_the_masters_interval() -> None:
    d = driver(150)
    d.at(0.0, INELIGIBLE)
    d.at(5.0, heard(200, 2, interval=50))
    d.at(5.1, ELIGIBLE)
    assert d.instance.master_adver_interval == 0.5
    assert d.instance.next_deadline() == pytest.approx(5.0 + master_down_interval(150, 0.5))


# -- BACKUP (RFC 5798 §6.4.2, RFC 9568) ------------------------------------------------------------


def test_backup_learns_the_advertised_interval() -> None:
    d = driver(150)
    d.at(0.0, ELIGIBLE)
    d.at(1.0, heard(200, 2, interval=200))
    assert d.instance.master_adver_interval == 2.0
    assert d.instance.next_deadline() == pytest.approx(1.0 + 6.0 + 2 * SKEW_150)
    assert d.instance.master_address == node_address(2)
    assert d.instance.master_priority == 200
    assert d.instance.last_advert_at == 1.0


def test_backup_hearing_priority_zero_arms_skew_time() -> None:
    d = driver(150)
    d.at(0.0, ELIGIBLE)
    d.at(1.0, heard(200, 2))
    d.at(2.0, heard(0, 2))
    assert d.instance.next_deadline() == pytest.approx(2.0 + SKEW_150)
    assert d.instance.master_priority == 0


def test_backup_with_preempt_discards_a_lower_master_and_takes_over() -> None:
    d = driver(200, index=2)
    d.at(0.0, ELIGIBLE)
    d.adverts(150, 1, start=0.5, end=30.0)
    assert d.became(State.MASTER) == [pytest.approx(MDI_200)]
    assert d.transitions()[-1][1].reason == "preempting 10.20.30.51: our priority 200 > its 150"


def test_backup_without_preempt_follows_a_lower_master() -> None:
    d = driver(200, index=2, preempt=False)
    d.at(0.0, ELIGIBLE)
    d.adverts(150, 1, start=0.5, end=60.0)
    assert d.became(State.MASTER) == []
    assert d.instance.next_deadline() == pytest.approx(59.5 + MDI_200)


def test_backup_accepts_equal_priority_even_from_a_lower_address() -> None:
    d = driver(150, index=3)
    d.at(0.0, ELIGIBLE)
    d.adverts(150, 1, start=0.5, end=30.0)
    assert d.became(State.MASTER) == []


def test_an_early_tick_is_harmless() -> None:
    d = driver(150)
    d.at(0.0, ELIGIBLE)
    assert d.instance.handle(Tick(), 1.0) == []
    assert d.instance.state is State.BACKUP
    assert d.instance.next_deadline() == pytest.approx(MDI_150)


# -- preempt_delay ---------------------------------------------------------------------------------


def test_preempt_delay_holds_back_preemption_after_becoming_eligible() -> None:
    d = driver(200, index=2, preempt_delay=10.0)
    d.at(0.0, ELIGIBLE)
    d.adverts(150, 1, start=0.5, end=30.0)
    assert d.became(State.MASTER) == [pytest.approx(10.0)]
    assert "preempting 10.20.30.51" in d.transitions()[-1][1].reason


def test_preempt_delay_counts_from_the_latest_eligibility() -> None:
    d = driver(200, index=2, preempt_delay=10.0)
    d.at(0.0, INELIGIBLE)
    d.adverts(150, 1, start=0.5, end=20.0)
    d.at(20.0, ELIGIBLE)
    d.adverts(150, 1, start=20.5, end=50.0)
    assert d.became(State.MASTER) == [pytest.approx(30.0)]


def test_preempt_delay_never_slows_down_a_real_failover() -> None:
    d = driver(200, index=2, preempt_delay=10.0)
    d.at(0.0, ELIGIBLE)
    d.adverts(150, 1, start=0.5, end=5.0)  # the lower master dies after its advert at 4.5
    d.advance(20.0)
    assert d.became(State.MASTER) == [pytest.approx(4.5 + MDI_200)]
    assert d.transitions()[-1][1].reason == "master down: no advert for 3.22s"


def test_preempt_delay_does_not_apply_to_a_resigning_master() -> None:
    d = driver(200, index=2, preempt_delay=10.0)
    d.at(0.0, ELIGIBLE)
    d.adverts(150, 1, start=0.5, end=5.0)
    d.at(4.8, heard(0, 1))
    d.advance(20.0)
    assert d.became(State.MASTER) == [pytest.approx(4.8 + SKEW_200)]


# -- MASTER (RFC 5798 §6.4.3) ----------------------------------------------------------------------


def master(priority: int = 150, index: int = 1, **kw) -> Driver:
    d = driver(priority, index, **kw)
    d.at(0.0, ELIGIBLE)
    d.advance(5.0)
    assert d.instance.state is State.MASTER
    return d


def test_master_advertises_every_interval_for_an_hour() -> None:
    d = master(150)
    started = time.perf_counter()
    d.advance(3600.0 + MDI_150)
    elapsed = time.perf_counter() - started
    sent = [t for t, a in d.log if isinstance(a, SendAdvert)]
    assert len(sent) >= 3600
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert max(gaps) == pytest.approx(1.0) and min(gaps) == pytest.approx(1.0)
    assert all(a.advert.priority == 150 for _, a in d.log if isinstance(a, SendAdvert))
    assert elapsed < 1.0


def test_master_after_a_stall_sends_one_advert_not_a_burst() -> None:
    d = master(150)
    due = d.instance.next_deadline()
    assert due is not None
    actions = d.instance.handle(Tick(), due + 5.5)
    assert actions == [SendAdvert(advert(150))]
    assert d.instance.next_deadline() == pytest.approx(due + 6.5)


def test_master_answers_priority_zero_at_once() -> None:
    d = master(150)
    actions = d.at(7.3, heard(0, 2))
    assert actions == [SendAdvert(advert(150))]
    assert d.instance.next_deadline() == pytest.approx(8.3)


def test_master_yields_to_a_higher_priority() -> None:
    d = master(150)
    actions = d.at(7.0, heard(200, 2, interval=200))
    assert actions == [
        RemoveVip(),
        Transition(
            State.MASTER, State.BACKUP, "master 10.20.30.52 has higher priority 200 > 150", 150
        ),
    ]
    assert d.instance.master_adver_interval == 2.0
    assert d.instance.next_deadline() == pytest.approx(7.0 + 6.0 + 2 * SKEW_150)
    assert d.instance.became_master_at is None


def test_equal_priority_master_yields_to_a_higher_address() -> None:
    d = master(150, index=1)
    actions = d.at(7.0, heard(150, 2))
    assert kinds(actions) == [RemoveVip, Transition]
    assert "equal priority 150 and higher address than 10.20.30.51" in reason_of(actions[1])
    assert d.instance.state is State.BACKUP


def test_equal_priority_master_keeps_it_against_a_lower_address() -> None:
    d = master(150, index=3)
    actions = d.at(7.0, heard(150, 2))
    assert actions == [SendAdvert(advert(150)), Announce()]
    assert d.instance.state is State.MASTER


def test_split_brain_master_readvertises_and_reannounces() -> None:
    d = master(200, index=2)
    actions = d.at(7.25, heard(150, 1))
    assert actions == [SendAdvert(advert(200)), Announce()]
    assert d.instance.state is State.MASTER
    assert d.instance.next_deadline() == pytest.approx(8.25)


@pytest.mark.parametrize("priority", [0, 100])
def test_master_answers_a_stream_of_lower_adverts_once_per_interval(priority: int) -> None:
    """A forged stream (priority 0 or below ours) gets at most one advert (and one GARP
    restart) per advert interval back, not one per packet; the Adver_Timer keeps going."""
    d = master(200, index=2)
    d.log.clear()
    answers = []
    for i in range(1000):  # 1000 adverts in 0.5 s
        answers += d.at(7.0 + i * 0.0005, heard(priority, 1))
    answers += d.at(8.1, heard(priority, 1))  # an interval (1 s) after the first answer
    d.advance(9.5)
    assert answers.count(SendAdvert(advert(200))) == 2
    assert answers.count(Announce()) == (2 if priority else 0)
    assert d.instance.state is State.MASTER
    sent = [t for t, a in d.log if isinstance(a, SendAdvert)]
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert max(gaps) <= 1.0 + 1e-9, "the master's own adverts never stopped"


# -- leaving MASTER --------------------------------------------------------------------------------


def test_ineligible_master_removes_the_vip_before_resigning() -> None:
    d = master(150)
    actions = d.at(7.0, INELIGIBLE)
    assert actions == [
        RemoveVip(),
        SendAdvert(advert(0)),
        Transition(State.MASTER, State.FAULT, "ineligible: /primary 503", 150),
    ]
    assert d.instance.next_deadline() is None
    assert d.instance.became_master_at is None
    assert not d.instance.eligible


def test_shutdown_of_master_resigns_then_goes_inert() -> None:
    d = master(150)
    actions = d.at(7.0, Shutdown("SIGTERM"))
    assert actions == [
        RemoveVip(),
        SendAdvert(advert(0)),
        Transition(State.MASTER, State.INIT, "shutdown: SIGTERM", 150),
    ]
    assert d.instance.stopped and d.instance.state is State.INIT
    for event in (ELIGIBLE, INELIGIBLE, Tick(), heard(0, 2), heard(250, 2), Shutdown("again")):
        assert d.instance.handle(event, 8.0) == []
    assert d.instance.next_deadline() is None


@pytest.mark.parametrize("state", [State.BACKUP, State.FAULT])
def test_shutdown_elsewhere_is_only_a_transition(state: State) -> None:
    d = driver(150)
    d.at(0.0, ELIGIBLE if state is State.BACKUP else INELIGIBLE)
    assert d.instance.state is state
    actions = d.at(1.0, Shutdown("SIGINT"))
    assert actions == [Transition(state, State.INIT, "shutdown: SIGINT", 150)]
    assert d.instance.handle(ELIGIBLE, 2.0) == []
    assert d.instance.next_deadline() is None


def test_shutdown_in_init_says_nothing_but_stops() -> None:
    instance = VrrpInstance(make_config(1, 150), 0.0)
    assert instance.handle(Shutdown("SIGTERM"), 1.0) == []
    assert instance.stopped
    assert instance.handle(ELIGIBLE, 2.0) == []


# -- what the instance ignores or refuses ----------------------------------------------------------


def test_adverts_for_other_vrids_own_address_or_family_are_ignored() -> None:
    d = driver(150, index=1)
    d.at(0.0, ELIGIBLE)
    deadline = d.instance.next_deadline()
    d.at(1.0, AdvertReceived(advert(200, vrid=51), node_address(2)))
    d.at(1.1, AdvertReceived(advert(200), node_address(1)))  # looped back
    d.at(1.2, AdvertReceived(advert(200), IPv6Address("fe80::2")))
    assert d.instance.next_deadline() == deadline
    assert d.instance.master_address is None


def test_time_going_backwards_is_clamped() -> None:
    d = driver(150)
    d.at(10.0, ELIGIBLE)
    d.instance.handle(heard(200, 2), 9.0)
    assert d.instance.last_advert_at == 10.0
    assert d.instance.next_deadline() == pytest.approx(10.0 + MDI_150)


def test_unknown_events_are_a_type_error() -> None:
    instance = VrrpInstance(make_config(1, 150), 0.0)
    with pytest.raises(TypeError, match="not a pgvip.vrrp event"):
        instance.handle("eligible", 1.0)  # type: ignore[arg-type]


def test_transition_renders_for_logs() -> None:
    transition = Transition(State.BACKUP, State.MASTER, "priority 0 from 10.20.30.51", 200)
    assert str(transition) == "BACKUP -> MASTER: priority 0 from 10.20.30.51"


V4 = IPv4Address("10.20.30.51")


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"priority": 0}, "priority must be an integer in 1..254"),
        ({"priority": 255}, "address owner"),
        ({"priority": True}, "priority"),
        ({"vrid": 0}, "vrid"),
        ({"vrid": 256}, "vrid"),
        ({"advert_int": 0}, "advert_int"),
        ({"advert_int": 4096}, "advert_int"),
        ({"vips": ()}, "vips must hold"),
        ({"vips": (IPv6Interface("2001:db8::50/64"),)}, "IPv4 interface"),
        ({"vips": (IPv4Address("10.20.30.50"),)}, "IPv4 interface"),
        ({"vips": (VIP, VIP)}, "twice"),
        ({"primary_address": "10.20.30.51"}, "primary_address"),
        ({"preempt": "yes"}, "preempt must be a bool"),
        ({"preempt_delay": -1.0}, "preempt_delay"),
        ({"preempt_delay": math.nan}, "preempt_delay"),
        ({"name": ""}, "name"),
    ],
)
def test_config_validation(changes: dict, shown: str) -> None:
    fields = {
        "name": "rw",
        "vrid": 50,
        "priority": 150,
        "advert_int": 100,
        "vips": (VIP,),
        "primary_address": V4,
    } | changes
    with pytest.raises(ValueError, match=shown):
        InstanceConfig(**fields)


def test_config_accepts_a_list_of_vips_and_ipv6() -> None:
    config = InstanceConfig(
        name="rw6",
        vrid=50,
        priority=150,
        advert_int=100,
        vips=[IPv6Interface("2001:db8::50/64")],  # type: ignore[arg-type]
        primary_address=IPv6Address("fe80::1"),
    )
    assert config.vips == (IPv6Interface("2001:db8::50/64"),)
    assert config.advert_interval == 1.0
    assert IPv4Interface("10.0.0.1/32") not in config.vips


# -- arbitrary event sequences ---------------------------------------------------------------------

events = st.one_of(
    st.builds(
        AdvertReceived,
        st.builds(advert, st.integers(0, 254), st.sampled_from([20, 100, 300])),
        st.sampled_from([node_address(i) for i in (1, 2, 3)]),
    ),
    st.builds(EligibilityChanged, st.booleans(), st.just("policy")),
    st.just(Tick()),
    st.just(Tick()),
    st.just(Shutdown("SIGTERM")),
)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(1, 254),
    st.booleans(),
    st.sampled_from([0.0, 2.0]),
    st.lists(st.tuples(st.floats(0, 5), events, st.booleans()), max_size=60),
)
def test_any_event_sequence_keeps_the_invariants(
    priority: int, preempt: bool, delay: float, steps: list[tuple[float, Event, bool]]
) -> None:
    instance = VrrpInstance(make_config(2, priority, preempt=preempt, preempt_delay=delay), 0.0)
    now, holding, stopped = 0.0, False, False
    for gap, event, at_deadline in steps:
        deadline = instance.next_deadline()
        if isinstance(event, Tick) and at_deadline and deadline is not None:
            now = max(now, deadline)
        else:
            now += gap
        before = instance.state
        actions = instance.handle(event, now)
        if stopped:
            assert actions == []
            continue
        for action in actions:
            if isinstance(action, AddVip):
                assert not holding
                holding = True
            elif isinstance(action, RemoveVip):
                assert holding
                holding = False
            elif isinstance(action, SendAdvert):
                assert action.advert.priority in (0, priority)
                assert (action.advert.priority == 0) == (RemoveVip() in actions)
            elif isinstance(action, Transition):
                assert action.from_state is before and action.to_state is instance.state
                assert action.priority == priority
                assert action.reason
        assert holding == (instance.state is State.MASTER) == instance.holds_vips
        if instance.state in (State.INIT, State.FAULT):
            assert instance.next_deadline() is None
        if isinstance(event, Tick) and deadline is not None and now >= deadline:
            following = instance.next_deadline()
            assert following is None or following > now  # no busy loop
        stopped = instance.stopped
        if isinstance(event, Shutdown):
            assert stopped and not holding


def test_a_tick_at_the_preempt_deadline_never_rearms_the_same_deadline() -> None:
    # Found by the property test: `now - heard.at` and the deadline `heard.at + interval`
    # disagreed by one ulp, so the tick re-armed the deadline it was delivered at.
    instance = VrrpInstance(make_config(2, 152, preempt=True, preempt_delay=2.0), 0.0)
    now = 2.8800087060268704
    instance.handle(EligibilityChanged(True, "policy"), now)
    instance.handle(heard(1, 1, interval=20), now)
    for _ in range(5):
        deadline = instance.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        instance.handle(Tick(), now)
        following = instance.next_deadline()
        assert following is None or following > now


def test_master_missing_follows_what_was_heard() -> None:
    instance = VrrpInstance(make_config(2, 200), 0.0)
    assert instance.master_missing(0.0), "nothing heard yet"
    instance.handle(heard(254, 1), 0.5)
    assert not instance.master_missing(1.0)
    # Silent for a Master_Down_Interval (3 x 1 s + skew): missing.
    silent_at = 0.5 + master_down_interval(200, 1.0)
    assert not instance.master_missing(silent_at - 0.01)
    assert instance.master_missing(silent_at)
    instance.handle(heard(254, 1), 5.0)
    assert not instance.master_missing(5.0)
    instance.handle(heard(0, 1), 5.2)
    assert instance.master_missing(5.2), "the master resigned"


def test_master_missing_is_false_while_we_are_master() -> None:
    instance = VrrpInstance(make_config(2, 200), 0.0)
    instance.handle(ELIGIBLE, 0.0)
    instance.handle(Tick(), instance.next_deadline() or 0.0)
    assert instance.state is State.MASTER
    assert not instance.master_missing(100.0)


def test_resuming_after_our_own_resign_takes_over_after_skew_time() -> None:
    # A restarted daemon whose previous run resigned 0.3 s ago: no Master_Down_Interval wait.
    instance = VrrpInstance(make_config(2, 254), 10.0)
    instance.resume_after_resign(9.7)
    assert instance.master_missing(10.0)
    (transition,) = instance.handle(ELIGIBLE, 10.0)
    assert "this node's previous run resigned (priority 0) 0.30s ago" in transition.reason
    deadline = instance.next_deadline()
    assert deadline is not None and deadline - 10.0 < 0.01  # Skew_Time at 254 and 1 s
    actions = instance.handle(Tick(), deadline)
    assert AddVip() in actions
    assert "priority 0 from this node's previous run" in _transitions(actions)[0].reason


def test_an_advert_heard_after_resuming_wins_over_the_record() -> None:
    instance = VrrpInstance(make_config(2, 200), 10.0)
    instance.resume_after_resign(9.9)
    instance.handle(heard(254, 1), 10.1)  # another node took over meanwhile
    instance.handle(ELIGIBLE, 10.2)
    deadline = instance.next_deadline()
    assert deadline is not None and deadline >= 10.1 + master_down_interval(200, 1.0)


def _transitions(actions: list[Action]) -> list[Transition]:
    return [a for a in actions if isinstance(a, Transition)]
