from pgvip.policy.link_gate import LinkGate, LinkState
from pgvip.vrrp.events import EligibilityChanged

UP = LinkState(up=True, carrier=True)
DOWN = LinkState(up=False, carrier=False)
NO_CARRIER = LinkState(up=True, carrier=False)
GONE = LinkState(up=False, carrier=False, present=False)

LEADER = EligibilityChanged(eligible=True, reason="/primary 200")
REPLICA = EligibilityChanged(eligible=False, reason="/primary 503")


def test_patroni_decisions_pass_through_while_the_link_is_usable() -> None:
    gate = LinkGate("eth0")
    assert gate.patroni(LEADER) is LEADER
    assert gate.patroni(REPLICA) is REPLICA


def test_link_down_makes_a_leader_ineligible_and_says_why() -> None:
    gate = LinkGate("eth0")
    gate.patroni(LEADER)
    event = gate.link_changed(DOWN)
    assert event == EligibilityChanged(eligible=False, reason="interface eth0 is down")
    assert not gate.link_usable


def test_each_unusable_state_has_its_own_reason() -> None:
    assert LinkGate("eth0").link_changed(NO_CARRIER).reason == "interface eth0 has no carrier"
    assert LinkGate("eth0").link_changed(GONE).reason == "interface eth0 was removed"


def test_patroni_decisions_are_held_back_while_down_and_the_latest_one_returns() -> None:
    gate = LinkGate("eth0")
    gate.patroni(REPLICA)
    gate.link_changed(DOWN)
    assert gate.patroni(LEADER) is None  # the instance must stay in FAULT
    back = gate.link_changed(UP)
    assert back is not None and back.eligible
    assert back.reason == "/primary 200; interface eth0 is up again"


def test_link_back_before_any_patroni_answer_says_nothing() -> None:
    gate = LinkGate("eth0", DOWN)
    assert gate.link_changed(UP) is None
    assert gate.patroni(LEADER) is LEADER


def test_repeated_link_states_are_not_repeated_events() -> None:
    gate = LinkGate("eth0")
    gate.patroni(LEADER)
    assert gate.link_changed(UP) is None
    assert gate.link_changed(DOWN) is not None
    assert gate.link_changed(NO_CARRIER) is None  # still unusable
    assert gate.link_changed(UP) is not None
