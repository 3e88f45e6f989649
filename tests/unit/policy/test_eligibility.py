"""Eligibility hysteresis on a fake clock: rise, fall, grace, 503-releases-now and failsafe."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgvip.patroni.verdict import Observation, Verdict
from pgvip.policy.eligibility import (
    FAILSAFE_KEEP_REASON,
    EligibilityDecision,
    EligibilityError,
    EligibilityPolicy,
)

Y, N, U = Verdict.YES, Verdict.NO, Verdict.UNKNOWN


def obs(verdict: Verdict, at: float, failsafe: bool | None = None) -> Observation:
    reason, cause = {
        Y: ("/primary 200", "ok"),
        N: ("/primary 503", "http_503"),
        U: ("timeout: 127.0.0.1:8008/primary", "timeout"),
    }[verdict]
    return Observation(verdict, reason, cause, at=at, latency=0.01, failsafe_active=failsafe)


def run(policy: EligibilityPolicy, script: list[tuple[Verdict, float]]) -> list[bool]:
    return [policy.observe(obs(v, at)).eligible for v, at in script]


def ticks(verdicts: str, step: float = 0.25) -> list[tuple[Verdict, float]]:
    table = {"Y": Y, "N": N, "U": U}
    return [(table[c], i * step) for i, c in enumerate(verdicts)]


@pytest.mark.parametrize(
    ("rise", "fall", "verdicts", "expected"),
    [
        # rise 1: the first 200 is enough.
        (1, 3, "Y", "1"),
        # rise 2: two consecutive 200s.
        (2, 3, "YY", "01"),
        # An UNKNOWN in between breaks the run of YES.
        (2, 3, "YUYY", "0001"),
        # A NO in between breaks it too.
        (3, 3, "YYNYYY", "000001"),
        # fall 3: eligible survives two UNKNOWNs, not three.
        (1, 3, "YUUU", "1110"),
        # A YES resets the UNKNOWN count.
        (1, 3, "YUUYUUU", "1111110"),
        # A NO releases at once, whatever fall says.
        (1, 3, "YYN", "110"),
        # ... and re-acquiring needs rise YES again.
        (2, 3, "YYNYY", "01001"),
        # UNKNOWN never makes an ineligible node eligible.
        (1, 1, "UUU", "000"),
        # fall 1: one UNKNOWN releases.
        (1, 1, "YU", "10"),
    ],
)
def test_hysteresis_table(rise: int, fall: int, verdicts: str, expected: str) -> None:
    got = run(EligibilityPolicy(rise, fall), ticks(verdicts))
    assert "".join("1" if e else "0" for e in got) == expected


def test_changed_only_when_eligibility_flips() -> None:
    policy = EligibilityPolicy(rise=2, fall=2)
    flips = [policy.observe(obs(v, at)).changed for v, at in ticks("YYYUUYYNN")]
    assert flips == [False, True, False, False, True, False, True, True, False]


def test_reasons_are_human_and_name_the_rule() -> None:
    policy = EligibilityPolicy(rise=2, fall=3)
    assert policy.observe(obs(Y, 0.0)) == EligibilityDecision(
        False, False, "/primary 200 x1 (rise 2)"
    )
    assert policy.observe(obs(Y, 0.25)) == EligibilityDecision(
        True, True, "/primary 200 x2 (rise 2)"
    )
    held = policy.observe(obs(U, 0.5))
    assert held.eligible and "keeping VIP" in held.reason and "(fall 3)" in held.reason
    policy.observe(obs(U, 0.75))
    released = policy.observe(obs(U, 1.0))
    assert released == EligibilityDecision(
        False, True, "Patroni unreachable 3 polls (fall 3): timeout: 127.0.0.1:8008/primary"
    )
    assert policy.reason == released.reason
    no = EligibilityPolicy(1, 3)
    no.observe(obs(Y, 0.0))
    assert no.observe(obs(N, 0.25)) == EligibilityDecision(False, True, "/primary 503")


def test_grace_releases_before_fall_when_time_runs_out() -> None:
    # Slow timeouts: each UNKNOWN arrives 1 s after the previous answer.
    policy = EligibilityPolicy(rise=1, fall=5, grace=2.0)
    assert policy.observe(obs(Y, 10.0)).eligible
    assert policy.observe(obs(U, 11.0)).eligible
    released = policy.observe(obs(U, 12.0))
    assert not released.eligible and released.changed
    assert "grace 2s" in released.reason and "2.0s" in released.reason


def test_fall_releases_before_grace_when_polls_are_fast() -> None:
    policy = EligibilityPolicy(rise=1, fall=2, grace=60.0)
    assert run(policy, [(Y, 0.0), (U, 0.1), (U, 0.2)]) == [True, True, False]


def test_grace_counts_from_the_last_definite_answer_not_the_first_unknown() -> None:
    policy = EligibilityPolicy(rise=1, fall=100, grace=1.0)
    assert run(policy, [(Y, 0.0), (Y, 5.0), (U, 5.5), (U, 5.9), (U, 6.0)]) == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_failsafe_keeps_the_vip_past_fall_and_grace() -> None:
    policy = EligibilityPolicy(rise=1, fall=2, grace=1.0, failsafe_max=30.0)
    policy.observe(obs(Y, 0.0, failsafe=True))
    # The first UNKNOWN is within fall and grace anyway; from the second on, failsafe holds.
    assert "(fall 2)" in policy.observe(obs(U, 0.5, failsafe=True)).reason
    for at in (1.0, 5.0, 29.0):
        decision = policy.observe(obs(U, at, failsafe=True))
        assert decision.eligible, at
        assert decision.reason.startswith(FAILSAFE_KEEP_REASON)
    expired = policy.observe(obs(U, 30.0, failsafe=True))
    assert not expired.eligible and expired.changed
    assert "failsafe_max 30s has passed" in expired.reason


def test_failsafe_does_not_override_a_503() -> None:
    policy = EligibilityPolicy(rise=1, fall=3)
    policy.observe(obs(Y, 0.0, failsafe=True))
    assert not policy.observe(obs(N, 0.25, failsafe=True)).eligible


@pytest.mark.parametrize("failsafe", [False, None])
def test_no_failsafe_or_unknown_failsafe_releases_at_fall(failsafe: bool | None) -> None:
    policy = EligibilityPolicy(rise=1, fall=2)
    policy.observe(obs(Y, 0.0, failsafe=failsafe))
    policy.observe(obs(U, 0.25, failsafe=failsafe))
    assert not policy.observe(obs(U, 0.5, failsafe=failsafe)).eligible


def test_failsafe_keep_can_be_turned_off() -> None:
    policy = EligibilityPolicy(rise=1, fall=2, failsafe_keep=False)
    policy.observe(obs(Y, 0.0, failsafe=True))
    policy.observe(obs(U, 0.25, failsafe=True))
    decision = policy.observe(obs(U, 0.5, failsafe=True))
    assert not decision.eligible
    assert FAILSAFE_KEEP_REASON not in decision.reason


def test_failsafe_never_makes_an_ineligible_node_eligible() -> None:
    policy = EligibilityPolicy(rise=1, fall=1)
    assert not policy.observe(obs(U, 0.0, failsafe=True)).eligible


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rise": 0, "fall": 1}, "rise must be >= 1"),
        ({"rise": 1, "fall": 0}, "fall must be >= 1"),
        ({"rise": 1, "fall": 1, "grace": 0.0}, "grace must be > 0"),
        ({"rise": 1, "fall": 1, "failsafe_max": -1.0}, "failsafe_max must be > 0"),
    ],
)
def test_impossible_parameters_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(EligibilityError, match=message):
        EligibilityPolicy(**kwargs)


_verdicts = st.lists(st.sampled_from([Y, N, U]), max_size=30)


@given(
    history=_verdicts,
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
    grace=st.none() | st.floats(0.1, 10.0),
    failsafe=st.none() | st.booleans(),
)
def test_a_no_always_yields_ineligible_immediately(
    history: list[Verdict], rise: int, fall: int, grace: float | None, failsafe: bool | None
) -> None:
    policy = EligibilityPolicy(rise, fall, grace)
    at = 0.0
    for verdict in history:
        policy.observe(obs(verdict, at, failsafe))
        at += 0.25
    was = policy.eligible
    decision = policy.observe(obs(N, at, failsafe))
    assert not decision.eligible
    assert not policy.eligible
    assert decision.changed == was


@given(history=_verdicts, rise=st.integers(1, 5), fall=st.integers(1, 5))
def test_eligible_only_after_rise_consecutive_yes(
    history: list[Verdict], rise: int, fall: int
) -> None:
    policy = EligibilityPolicy(rise, fall)
    streak = 0
    was = False
    for i, verdict in enumerate(history):
        streak = streak + 1 if verdict is Y else 0
        now = policy.observe(obs(verdict, i * 0.25)).eligible
        if now and not was:
            assert verdict is Y and streak >= rise
        was = now
