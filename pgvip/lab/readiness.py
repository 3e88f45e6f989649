"""When is the lab's cluster ready: one running leader, every other node a streaming
replica, and each node's own Patroni agreeing with the DCS view. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pgvip.patroni.roles import PRIMARY_ROLES, REPLICA_ROLES


@dataclass(frozen=True)
class Readiness:
    """How far the cluster is from ready, in words, and which nodes hold it back."""

    ready: bool
    summary: str
    leader: str | None
    behind: tuple[str, ...]


def assess_cluster(
    members: Sequence[Mapping[str, Any]],
    nodes: Sequence[str],
    live: Mapping[str, Mapping[str, Any] | str] | None = None,
) -> Readiness:
    """Ready means exactly one running leader and every other node a streaming replica.

    `members` is Patroni's /cluster (the DCS view, which keeps a dead member's last state
    for up to ttl); `live` maps each node to its own /patroni answer, or to why it gave none,
    and must agree: the leader runs as primary and streams to every replica, and each
    replica runs and streams.
    """
    by_name = {str(m.get("name")): m for m in members}
    leaders = [
        name
        for name, m in by_name.items()
        if m.get("role") in PRIMARY_ROLES and m.get("state") == "running"
    ]
    leader = leaders[0] if len(leaders) == 1 else None
    parts: list[str] = []
    behind: list[str] = []
    if leader is not None:
        parts.append(f"leader {leader}")
    elif leaders:
        parts.append(f"{len(leaders)} leaders ({', '.join(sorted(leaders))})")
    else:
        parts.append("no leader yet")
    for node in nodes:
        m = by_name.get(node)
        if node in leaders:
            problem = None
        elif m is None:
            problem = "not registered"
        elif m.get("role") in REPLICA_ROLES and m.get("state") == "streaming":
            problem = None
        else:
            problem = f"{m.get('role', '?')} {m.get('state', '?')}"
        if problem is None and live is not None:
            problem = _live_problem(node, live.get(node, "no answer"), leader, nodes)
        if problem is not None:
            parts.append(f"{node} {problem}")
            behind.append(node)
        elif node not in leaders:
            parts.append(f"{node} streaming")
    if leader is None:
        behind = list(nodes)  # nobody leads: every node's Patroni is a suspect
    ready = leader is not None and not behind
    return Readiness(ready, "; ".join(parts), leader, tuple(dict.fromkeys(behind)))


def _live_problem(
    node: str, view: Mapping[str, Any] | str, leader: str | None, nodes: Sequence[str]
) -> str | None:
    """What a node's own /patroni answer contradicts in the DCS view, or None."""
    if isinstance(view, str):
        return f"(Patroni REST: {view})"
    role, state = view.get("role", "?"), view.get("state", "?")
    if node == leader:
        if role not in PRIMARY_ROLES or state != "running":
            return f"(leads in DCS, but its Patroni says {role} {state})"
        streaming = {
            str(r.get("application_name"))
            for r in view.get("replication") or []
            if r.get("state") == "streaming"
        }
        missing = [n for n in nodes if n != node and n not in streaming]
        if missing:
            return f"(primary, not yet streaming to {', '.join(missing)})"
        return None
    replication = view.get("replication_state", "?")
    if role in REPLICA_ROLES and state == "running" and replication == "streaming":
        return None
    return f"(its Patroni says {role} {state}, replication {replication})"
