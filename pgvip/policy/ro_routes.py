"""Which nodes announce the RO VIP in L3 mode: every healthy replica (the routers balance
over them with ECMP), and the leader only while no replica is healthy. Every node applies
the same rules to its own Patroni's `/cluster`, so the announced set is the healthy set.
Pure and clock-free."""

from __future__ import annotations

from pgvip.patroni.cluster import ClusterView, Member
from pgvip.policy.backends import SERVING_STATES, WEIGHT_TAG


def serves(m: Member, max_lag: int | None) -> str | None:
    """None if the replica `m` may take read-only connections, else why not."""
    if not m.is_replica:
        return f"role {m.role}"
    if m.state not in SERVING_STATES:
        return f"state {m.state}"
    if m.noloadbalance:
        return "tagged noloadbalance"
    if str(m.tags.get(WEIGHT_TAG, "")).strip() == "0":
        return f"tagged {WEIGHT_TAG} = 0"
    if max_lag is not None and m.lag is not None and m.lag > max_lag:
        return f"lag {m.lag} B > max_lag {max_lag} B"
    return None


def ro_route(view: ClusterView, me: str, max_lag: int | None, fallback: str) -> tuple[bool, str]:
    """Whether member `me` announces the RO VIP, and why (for logs and /status)."""
    member = view.member(me)
    if member is None:
        return False, f"{me} is not in /cluster"
    if member.is_replica:
        why = serves(member, max_lag)
        if why is None:
            return True, f"healthy replica ({member.state})"
        return False, f"replica not serving: {why}"
    if member.is_leader:
        healthy = [m.name for m in view.members if m.is_replica and serves(m, max_lag) is None]
        if healthy:
            return False, f"leader; healthy replicas serve: {', '.join(sorted(healthy))}"
        if fallback != "primary":
            return False, "leader; no healthy replica, and ro.fallback = none"
        if member.state not in SERVING_STATES:
            return False, f"leader in state {member.state}"
        return True, "leader, as fallback: no healthy replica"
    return False, f"role {member.role}"
