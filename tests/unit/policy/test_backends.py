"""The RO backend-set policy: hysteresis, draining, fallback, weights, explanations."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgvip.patroni.cluster import ClusterView, Member
from pgvip.policy.backends import (
    Backend,
    BackendPolicy,
    BackendPolicyError,
    BackendSettings,
    ProbeResult,
)

MB = 1024**2


def member(name: str, host: str | None = None, **kw: Any) -> Member:
    number = int(name[1:])
    fields: dict[str, Any] = {
        "name": name,
        "role": "replica",
        "state": "streaming",
        "host": host or f"10.0.0.{number}",
        "port": 5432,
    }
    fields.update(kw)
    return Member(**fields)


def leader(name: str = "p1", **kw: Any) -> Member:
    return member(name, **{"role": "leader", "state": "running", **kw})


def view(*members: Member) -> ClusterView:
    leaders = [m.name for m in members if m.is_leader]
    return ClusterView(members=members, leader=leaders[0] if leaders else None)


def ok(name: str, at: float, **kw: Any) -> ProbeResult:
    return ProbeResult(member=name, ok=True, reason="/replica 200", at=at, **kw)


def bad(name: str, at: float, reason: str = "/replica 503", **kw: Any) -> ProbeResult:
    return ProbeResult(member=name, ok=False, reason=reason, at=at, **kw)


def names(bs: Any) -> list[str]:
    return [b.member for b in bs]


def settings(**kw: Any) -> BackendSettings:
    base: dict[str, Any] = {"rise": 2, "fall": 3, "drain_timeout": 10.0, "fallback": "none"}
    base.update(kw)
    return BackendSettings(**base)


def test_replica_joins_after_rise_good_observations() -> None:
    policy = BackendPolicy(settings())
    v = view(leader(), member("p2"))
    first = policy.update(v, [ok("p2", 1.0)], now=1.0)
    assert first.backends == ()
    assert "fallback 'none'" in first.reason
    second = policy.update(v, [ok("p2", 2.0)], now=2.0)
    assert second.backends == (Backend(ip_address("10.0.0.2"), 5432, 1, "p2"),)
    assert second.reason == "1 healthy replica(s): p2"
    assert not second.fallback_active


def test_the_same_probe_result_counts_once() -> None:
    policy = BackendPolicy(settings())
    v = view(member("p2"))
    for now in (1.0, 2.0, 3.0):
        result = policy.update(v, [ok("p2", 1.0)], now=now)
    assert result.backends == ()
    assert "x1 of rise 2" in policy.explain()[0].reason


def test_fall_then_drain_then_removal() -> None:
    policy = BackendPolicy(settings(rise=1, fall=3, drain_timeout=10.0))
    v = view(member("p2"), member("p3"))
    policy.update(v, [ok("p2", 1), ok("p3", 1)], now=1)
    for t in (2, 3):
        still = policy.update(v, [bad("p2", t), ok("p3", t)], now=t)
        assert names(still.active) == ["p2", "p3"]
    drained = policy.update(v, [bad("p2", 4), ok("p3", 4)], now=4)
    assert names(drained.active) == ["p3"]
    assert drained.backends[-1] == Backend(ip_address("10.0.0.2"), 5432, 0, "p2", draining=True)
    assert "draining p2" in drained.reason
    status = {s.member: s for s in policy.explain()}
    assert status["p2"].state == "draining"
    assert "/replica 503 x3 (fall 3)" in status["p2"].reason
    assert "removed in 10.0 s" in status["p2"].reason
    during = policy.update(v, [ok("p3", 13.9)], now=13.9)
    assert names(during.backends) == ["p3", "p2"]
    gone = policy.update(v, [ok("p3", 14)], now=14)
    assert names(gone.backends) == ["p3"]
    assert {s.member: s.state for s in policy.explain()}["p2"] == "down"


def test_a_definite_no_takes_a_healthy_backend_out_at_once() -> None:
    """Its own 503, or connection refused: every connection sent there fails, so no fall."""
    policy = BackendPolicy(settings(rise=1, fall=3))
    v = view(member("p2"), member("p3"))
    policy.update(v, [ok("p2", 1), ok("p3", 1)], now=1)
    out = policy.update(v, [bad("p2", 2, "connect refused", definitive=True), ok("p3", 2)], now=2)
    assert names(out.active) == ["p3"]
    assert "a definite no: out at once, not after fall 3" in policy.explain()[0].reason
    # Back only after rise good answers, as ever.
    back = policy.update(v, [ok("p2", 3), ok("p3", 3)], now=3)
    assert names(back.active) == ["p2", "p3"]


def test_a_doubt_such_as_a_timeout_still_needs_fall() -> None:
    policy = BackendPolicy(settings(rise=1, fall=2))
    v = view(member("p2"))
    policy.update(v, [ok("p2", 1)], now=1)
    kept = policy.update(v, [bad("p2", 2, "timeout after 1 s")], now=2)
    assert names(kept.active) == ["p2"]
    assert names(policy.update(v, [bad("p2", 3, "timeout after 1 s")], now=3).active) == []


def test_recovery_while_draining_makes_it_active_again() -> None:
    policy = BackendPolicy(settings(rise=2, fall=1))
    v = view(member("p2"))
    policy.update(v, [ok("p2", 1)], now=1)
    policy.update(v, [ok("p2", 2)], now=2)
    assert policy.update(v, [bad("p2", 3)], now=3).backends[0].draining
    assert policy.update(v, [ok("p2", 4)], now=4).backends[0].draining  # rise 2: not yet
    back = policy.update(v, [ok("p2", 5)], now=5)
    assert back.backends == (Backend(ip_address("10.0.0.2"), 5432, 1, "p2"),)


def test_lag_over_max_lag_is_a_failure_from_probe_or_cluster() -> None:
    policy = BackendPolicy(settings(rise=1, fall=1, max_lag=16 * MB))
    v = view(member("p2"), member("p3", lag=32 * MB))
    result = policy.update(v, [ok("p2", 1, lag=17 * MB), ok("p3", 1)], now=1)
    assert result.backends == ()
    why = {s.member: s.reason for s in policy.explain()}
    assert why["p2"] == f"lag {17 * MB} B > max_lag {16 * MB} B (/replica 200)"
    assert why["p3"] == f"lag {32 * MB} B > max_lag {16 * MB} B (/cluster)"
    fine = policy.update(
        view(member("p2"), member("p3", lag=MB)), [ok("p2", 2, lag=MB), ok("p3", 2)], now=2
    )
    assert names(fine.active) == ["p2", "p3"]


def test_lag_is_ignored_without_max_lag() -> None:
    policy = BackendPolicy(settings(rise=1))
    result = policy.update(view(member("p2", lag=10**12)), [ok("p2", 1, lag=10**12)], now=1)
    assert names(result.active) == ["p2"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"noloadbalance": True}, "tagged noloadbalance"),
        ({"state": "stopped"}, "state 'stopped' is not running/streaming"),
        ({"state": "in archive recovery"}, "is not running/streaming"),
        ({"role": "witness"}, "role 'witness' is not a replica role"),
        ({"host": "db2.example.com"}, "host 'db2.example.com' is not an IP address"),
        ({"host": None}, "no host in /cluster"),
        ({"tags": {"pgvip_weight": 0}}, "tag pgvip_weight=0"),
    ],
)
def test_structural_exclusions_act_at_once_and_drain(changes: dict[str, Any], reason: str) -> None:
    policy = BackendPolicy(settings(rise=1, fall=5))
    policy.update(view(member("p2")), [ok("p2", 1)], now=1)
    changed = replace(member("p2"), **changes)
    result = policy.update(view(changed), [ok("p2", 2)], now=2)
    assert result.active == ()
    assert result.backends == (Backend(ip_address("10.0.0.2"), 5432, 0, "p2", draining=True),)
    (status,) = policy.explain()
    assert status.state == "draining" and reason in status.reason


def test_excluded_member_must_rise_again_after_it_is_fixed() -> None:
    policy = BackendPolicy(settings(rise=2))
    v = view(member("p2"))
    policy.update(v, [ok("p2", 1)], now=1)
    policy.update(v, [ok("p2", 2)], now=2)
    policy.update(view(member("p2", state="stopped")), [ok("p2", 3)], now=3)
    again = policy.update(v, [ok("p2", 4)], now=4)
    assert again.active == ()
    assert names(policy.update(v, [ok("p2", 5)], now=5).active) == ["p2"]


def test_member_gone_from_cluster_drains_and_rises_again_when_back() -> None:
    policy = BackendPolicy(settings(rise=1, drain_timeout=5))
    both = view(member("p2"), member("p3"))
    policy.update(both, [ok("p2", 1), ok("p3", 1)], now=1)
    only3 = policy.update(view(member("p3")), [ok("p3", 2)], now=2)
    assert [(b.member, b.weight, b.draining) for b in only3.backends] == [
        ("p3", 1, False),
        ("p2", 0, True),
    ]
    assert names(policy.update(view(member("p3")), [], now=7).backends) == ["p3"]
    back = policy.update(both, [ok("p2", 1), ok("p3", 8)], now=8)
    assert names(back.active) == ["p3"]  # the old result does not count again
    assert names(policy.update(both, [ok("p2", 9)], now=9).active) == ["p2", "p3"]


def test_fallback_primary_serves_from_the_leader_then_drains_it() -> None:
    policy = BackendPolicy(settings(fallback="primary", rise=1))
    v = view(leader("p1"), member("p2"))
    fb = policy.update(v, [bad("p2", 1)], now=1)
    assert fb.fallback_active
    assert fb.backends == (Backend(ip_address("10.0.0.1"), 5432, 1, "p1"),)
    assert fb.reason == "no healthy replica; fallback to primary p1"
    assert {s.member: s.state for s in policy.explain()} == {"p1": "active", "p2": "down"}
    healed = policy.update(v, [ok("p2", 2)], now=2)
    assert not healed.fallback_active
    assert [(b.member, b.draining) for b in healed.backends] == [("p2", False), ("p1", True)]


def test_fallback_needs_a_usable_leader() -> None:
    policy = BackendPolicy(settings(fallback="primary"))
    stopped = policy.update(view(leader(state="stopped"), member("p2")), [], now=1)
    assert stopped.backends == () and not stopped.fallback_active
    assert "no usable primary (leader state 'stopped' is not running)" in stopped.reason
    none = policy.update(view(member("p2")), [], now=2)
    assert "no leader in /cluster" in none.reason
    tagged = policy.update(view(leader(noloadbalance=True)), [], now=3)
    assert tagged.backends == () and "tagged noloadbalance" in tagged.reason


def test_fallback_none_leaves_the_pool_empty() -> None:
    policy = BackendPolicy(settings(fallback="none"))
    result = policy.update(view(leader(), member("p2")), [bad("p2", 1)], now=1)
    assert result.backends == () and not result.fallback_active


def test_include_primary_always_adds_the_leader() -> None:
    policy = BackendPolicy(settings(include_primary=True, rise=1))
    result = policy.update(view(leader(), member("p2")), [ok("p2", 1)], now=1)
    assert names(result.active) == ["p1", "p2"]
    assert result.reason == "1 healthy replica(s): p2; primary p1 included"
    assert not result.fallback_active


def test_include_primary_with_fallback_none_and_no_replica() -> None:
    policy = BackendPolicy(settings(include_primary=True, fallback="none"))
    result = policy.update(view(leader(), member("p2")), [bad("p2", 1)], now=1)
    assert names(result.active) == ["p1"] and not result.fallback_active
    assert result.reason == "no healthy replica (fallback 'none'); primary p1 included"


def test_promoted_replica_leaves_the_pool_and_must_rise_after_demotion() -> None:
    policy = BackendPolicy(settings(rise=1, drain_timeout=0))
    v = view(leader("p1"), member("p2"))
    policy.update(v, [ok("p2", 1)], now=1)
    promoted = view(member("p1"), leader("p2"))
    result = policy.update(promoted, [ok("p1", 2), ok("p2", 2)], now=2)
    assert names(result.active) == ["p1"]  # drain_timeout 0: p2 is gone at once
    demoted = policy.update(v, [ok("p2", 2)], now=3)
    assert "p2" not in names(demoted.backends)


def test_weight_tag_and_port_override() -> None:
    policy = BackendPolicy(settings(rise=1, port=6432))
    v = view(
        member("p2", tags={"pgvip_weight": 3}),
        member("p3", tags={"pgvip_weight": "2"}),
        member("p4", tags={"pgvip_weight": "heavy"}),
        member("p5", tags={"pgvip_weight": 1000}),
    )
    result = policy.update(v, [ok(n, 1) for n in ("p2", "p3", "p4", "p5")], now=1)
    assert [(b.member, b.weight, b.port) for b in result.backends] == [
        ("p2", 3, 6432),
        ("p3", 2, 6432),
        ("p4", 1, 6432),
        ("p5", 1, 6432),
    ]
    why = {s.member: s.reason for s in policy.explain()}
    assert "ignored tag pgvip_weight='heavy' (not an integer)" in why["p4"]
    assert "ignored tag pgvip_weight=1000 (must be 0..100)" in why["p5"]


def test_member_port_is_used_without_override() -> None:
    policy = BackendPolicy(settings(rise=1))
    result = policy.update(
        view(member("p2", port=5433), member("p3", port=None)), [ok("p2", 1), ok("p3", 1)], now=1
    )
    assert [(b.member, b.port) for b in result.backends] == [("p2", 5433), ("p3", 5432)]


def test_family_filter() -> None:
    policy = BackendPolicy(settings(rise=1, family=6))
    v = view(member("p2"), member("p3", host="fd00::3"))
    result = policy.update(v, [ok("p2", 1), ok("p3", 1)], now=1)
    assert [(b.member, str(b.address)) for b in result.backends] == [("p3", "fd00::3")]
    assert "is not IPv6 like the RO VIP" in {s.member: s.reason for s in policy.explain()}["p2"]


def test_mixed_families_sort_without_error() -> None:
    policy = BackendPolicy(settings(rise=1))
    v = view(member("p2", host="fd00::2"), member("p3"))
    result = policy.update(v, [ok("p2", 1), ok("p3", 1)], now=1)
    assert names(result.backends) == ["p3", "p2"]


def test_two_members_on_one_address_keep_only_the_first() -> None:
    policy = BackendPolicy(settings(rise=1))
    v = view(member("p2"), member("p3", host="10.0.0.2"))
    result = policy.update(v, [ok("p2", 1), ok("p3", 1)], now=1)
    assert names(result.backends) == ["p2"]
    assert {s.member: s.state for s in policy.explain()}["p3"] == "excluded"


def test_every_probe_kind_must_be_ok() -> None:
    policy = BackendPolicy(settings(rise=1, fall=1))
    v = view(member("p2"))
    sql_bad = ProbeResult("p2", False, "SQL: refused", 1.5, kind="sql")
    result = policy.update(v, [ok("p2", 1), sql_bad], now=2)
    assert result.backends == ()
    # A newer HTTP answer alone does not hide the last SQL failure.
    assert policy.update(v, [ok("p2", 3)], now=3).backends == ()
    sql_ok = ProbeResult("p2", True, "SQL ok", 4, kind="sql")
    fine = policy.update(v, [sql_ok], now=4)
    assert names(fine.active) == ["p2"]
    assert {s.member: s.reason for s in policy.explain()}["p2"].startswith("/replica 200 + SQL ok")


def test_stale_probes_take_a_healthy_backend_down() -> None:
    policy = BackendPolicy(settings(rise=1, stale_after=5.0, drain_timeout=0))
    v = view(member("p2"))
    assert names(policy.update(v, [ok("p2", 1)], now=1).active) == ["p2"]
    assert names(policy.update(v, [ok("p2", 1)], now=6).active) == ["p2"]
    assert policy.update(v, [ok("p2", 1)], now=6.5).backends == ()
    assert "no new probe result for 5.5 s" in policy.explain()[0].reason


def test_probes_for_unknown_members_are_ignored() -> None:
    policy = BackendPolicy(settings(rise=1))
    result = policy.update(view(member("p2")), [ok("p9", 1)], now=1)
    assert result.backends == ()
    assert [s.member for s in policy.explain()] == ["p2"]


def test_current_and_explain_before_any_update() -> None:
    policy = BackendPolicy(settings())
    assert policy.current.backends == () and policy.current.reason == "no update yet"
    assert policy.explain() == ()


def test_explain_lines_read_well() -> None:
    policy = BackendPolicy(settings(rise=1))
    policy.update(view(leader(), member("p2")), [ok("p2", 1)], now=1)
    lines = [str(s) for s in policy.explain()]
    assert lines == [
        "p1 (10.0.0.1): leader: leader, not in the RO pool",
        "p2 (10.0.0.2): active: /replica 200 x1 (rise 1)",
    ]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"rise": 0}, "rise and fall must be >= 1"),
        ({"fall": 0}, "rise and fall must be >= 1"),
        ({"drain_timeout": -1}, "drain_timeout must be >= 0"),
        ({"fallback": "replica"}, "fallback must be 'primary' or 'none'"),
        ({"max_lag": -5}, "max_lag must be >= 0"),
        ({"port": 0}, "port must be 1-65535"),
        ({"family": 5}, "family must be 4, 6 or None"),
        ({"stale_after": 0}, "stale_after must be > 0"),
    ],
)
def test_bad_settings(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendPolicyError, match=message):
        BackendSettings(**kw)


@given(
    rise=st.integers(1, 4),
    fall=st.integers(1, 4),
    answers=st.lists(st.booleans(), max_size=40),
)
def test_hysteresis_matches_a_reference_model(rise: int, fall: int, answers: list[bool]) -> None:
    policy = BackendPolicy(settings(rise=rise, fall=fall, drain_timeout=0))
    v = view(member("p2"))
    healthy, streak_ok, streak_bad = False, 0, 0
    for i, answer in enumerate(answers):
        probe = ok("p2", i) if answer else bad("p2", i)
        result = policy.update(v, [probe], now=i)
        streak_ok, streak_bad = (streak_ok + 1, 0) if answer else (0, streak_bad + 1)
        if not healthy and streak_ok >= rise:
            healthy = True
        elif healthy and streak_bad >= fall:
            healthy = False
        assert (names(result.backends) == ["p2"]) is healthy
