"""The one vocabulary of Patroni member roles, for `/cluster`, `/patroni` and the lab.

Patroni spells the same node differently per endpoint: `/cluster` calls the leader-key holder
"leader" (or "standby_leader" in a standby cluster), while a node's own `/patroni` says
"primary" ("master" before Patroni 3) or "standby_leader". The sets below keep each
endpoint's meaning apart instead of one loose union, so no caller's decision changes.
"""

from __future__ import annotations

__all__ = [
    "CLUSTER_LEADER_ROLES",
    "KNOWN_CLUSTER_ROLES",
    "LEADER",
    "MASTER",
    "PRIMARY",
    "PRIMARY_ROLES",
    "QUORUM_STANDBY",
    "REPLICA",
    "REPLICA_ROLES",
    "STANDBY_LEADER",
    "STATUS_LEADER_ROLES",
    "SYNC_STANDBY",
    "is_cluster_leader",
    "is_primary",
    "is_replica",
    "is_status_leader",
]

LEADER = "leader"  # /cluster: the leader-key holder of a primary cluster
STANDBY_LEADER = "standby_leader"  # both endpoints: the leader of a standby cluster
PRIMARY = "primary"  # /patroni: this node is the read-write primary
MASTER = "master"  # /patroni before Patroni 3: the same as "primary"
REPLICA = "replica"
SYNC_STANDBY = "sync_standby"
QUORUM_STANDBY = "quorum_standby"

# Replicas that stream from a leader, under either endpoint.
REPLICA_ROLES = frozenset({REPLICA, SYNC_STANDBY, QUORUM_STANDBY})
# `/cluster`: who holds the leader key (the RO balancer's "leader", never a backend).
CLUSTER_LEADER_ROLES = frozenset({LEADER, STANDBY_LEADER})
# Every role `/cluster` is known to report; an unknown future role is kept, never balanced to.
KNOWN_CLUSTER_ROLES = CLUSTER_LEADER_ROLES | REPLICA_ROLES
# `/patroni`: this node holds the leader key (it gets ro.priority_leader).
STATUS_LEADER_ROLES = frozenset({PRIMARY, MASTER, STANDBY_LEADER})
# A read-write primary under any endpoint's spelling; a standby leader is not one (the lab
# builds no standby cluster, so its readiness checks want exactly this).
PRIMARY_ROLES = frozenset({LEADER, PRIMARY, MASTER})


def is_cluster_leader(role: str) -> bool:
    """A `/cluster` member role that holds the leader key."""
    return role in CLUSTER_LEADER_ROLES


def is_status_leader(role: str) -> bool:
    """A node's own `/patroni` role that holds the leader key."""
    return role in STATUS_LEADER_ROLES


def is_replica(role: str) -> bool:
    return role in REPLICA_ROLES


def is_primary(role: str) -> bool:
    """A read-write primary, as `/cluster` or `/patroni` spells it."""
    return role in PRIMARY_ROLES
