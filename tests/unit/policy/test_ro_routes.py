"""Which nodes announce the RO VIP in L3 mode."""

from __future__ import annotations

from pgvip.patroni.cluster import ClusterView, Member
from pgvip.policy.ro_routes import ro_route, serves

MB = 1 << 20


def _view(*members: Member) -> ClusterView:
    leader = next((m.name for m in members if m.role == "leader"), None)
    return ClusterView(members=members, leader=leader)


LEADER = Member("p1", "leader", "running", "10.0.0.1", 5432)
R2 = Member("p2", "replica", "streaming", "10.0.0.2", 5432, lag=0)
R3 = Member("p3", "replica", "streaming", "10.0.0.3", 5432, lag=0)


def test_healthy_replicas_announce_and_the_leader_does_not() -> None:
    view = _view(LEADER, R2, R3)
    assert ro_route(view, "p2", 16 * MB, "primary")[0]
    assert ro_route(view, "p3", 16 * MB, "primary")[0]
    ok, why = ro_route(view, "p1", 16 * MB, "primary")
    assert not ok and "p2, p3" in why


def test_the_leader_announces_only_when_no_replica_serves() -> None:
    lagging = Member("p2", "replica", "streaming", "10.0.0.2", 5432, lag=64 * MB)
    stopped = Member("p3", "replica", "stopped", "10.0.0.3", 5432)
    view = _view(LEADER, lagging, stopped)
    assert not ro_route(view, "p2", 16 * MB, "primary")[0]
    assert "lag" in ro_route(view, "p2", 16 * MB, "primary")[1]
    assert not ro_route(view, "p3", 16 * MB, "primary")[0]
    ok, why = ro_route(view, "p1", 16 * MB, "primary")
    assert ok and "fallback" in why
    assert not ro_route(view, "p1", 16 * MB, "none")[0]


def test_tags_and_unknown_members_never_announce() -> None:
    tagged = Member("p2", "replica", "streaming", "10.0.0.2", 5432, lag=0, noloadbalance=True)
    weight0 = Member("p3", "replica", "streaming", "10.0.0.3", 5432, lag=0,
                     tags={"pgvip_weight": 0})  # fmt: skip
    assert serves(tagged, None) == "tagged noloadbalance"
    assert serves(weight0, None) == "tagged pgvip_weight = 0"
    view = _view(LEADER, tagged, weight0)
    assert ro_route(view, "p1", None, "primary")[0]  # nobody else serves
    assert not ro_route(view, "p9", None, "primary")[0]
    assert not ro_route(view, "", None, "primary")[0]


def test_a_lag_patroni_does_not_know_does_not_exclude() -> None:
    unknown = Member("p2", "replica", "streaming", "10.0.0.2", 5432, lag=None)
    assert serves(unknown, 16 * MB) is None
