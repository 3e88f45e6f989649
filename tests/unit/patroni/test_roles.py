"""The Patroni role vocabulary: each endpoint's spelling keeps its own meaning."""

from __future__ import annotations

from pgvip.patroni import roles


def test_cluster_leader_is_the_leader_key_holder_including_a_standby_leader() -> None:
    assert roles.is_cluster_leader("leader")
    assert roles.is_cluster_leader("standby_leader")
    # /cluster never says primary/master; such a role stays unknown, never balanced to.
    assert not roles.is_cluster_leader("primary")
    assert not roles.is_cluster_leader("master")
    assert not roles.is_cluster_leader("replica")


def test_status_leader_uses_the_patroni_endpoint_spelling() -> None:
    assert {r for r in ("primary", "master", "standby_leader") if roles.is_status_leader(r)} == {
        "primary",
        "master",
        "standby_leader",
    }
    assert not roles.is_status_leader("leader")
    assert not roles.is_status_leader("replica")


def test_primary_is_read_write_under_any_spelling_but_not_a_standby_leader() -> None:
    for role in ("leader", "primary", "master"):
        assert roles.is_primary(role)
    assert not roles.is_primary("standby_leader")


def test_replica_roles_and_known_cluster_roles() -> None:
    for role in ("replica", "sync_standby", "quorum_standby"):
        assert roles.is_replica(role)
        assert not roles.is_cluster_leader(role)
    assert not roles.is_replica("standby_leader")
    assert {
        "leader",
        "standby_leader",
        "replica",
        "sync_standby",
        "quorum_standby",
    } == roles.KNOWN_CLUSTER_ROLES
