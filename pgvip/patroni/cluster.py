"""Parse Patroni's `/cluster` answer into immutable `Member`/`ClusterView` values.

Pure: no HTTP here. A malformed answer raises `ClusterParseError` with the reason, so the
caller can keep its last good view instead of emptying the RO pool on one bad reply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pgvip.patroni.roles import is_cluster_leader, is_replica


class ClusterParseError(ValueError):
    """Patroni's `/cluster` answer cannot be understood; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot parse Patroni /cluster answer: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Member:
    name: str
    role: str  # one of roles.KNOWN_CLUSTER_ROLES; an unknown future role is kept, never balanced to
    state: str  # "running", "streaming", "in archive recovery", "stopped", ... ("" if absent)
    host: str | None = None  # PostgreSQL connect_address host; may be a DNS name
    port: int | None = None
    api_url: str | None = None
    lag: int | None = None  # bytes behind the leader; None when Patroni says "unknown"
    timeline: int | None = None
    # Read-only, and left out of the hash so a Member stays hashable.
    tags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    noloadbalance: bool = False

    @property
    def is_leader(self) -> bool:
        return is_cluster_leader(self.role)

    @property
    def is_replica(self) -> bool:
        return is_replica(self.role)


@dataclass(frozen=True)
class ClusterView:
    members: tuple[Member, ...]
    leader: str | None  # name of the leader / standby_leader member, if any
    paused: bool = False

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    @property
    def leader_member(self) -> Member | None:
        return None if self.leader is None else self.member(self.leader)


def parse_cluster(data: bytes | str | Mapping[str, Any]) -> ClusterView:
    """Parse a `/cluster` body (raw bytes/str, or already decoded JSON) into a ClusterView."""
    if isinstance(data, bytes | str):
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ClusterParseError(f"not JSON: {exc}") from exc
    else:
        doc = data
    if not isinstance(doc, Mapping):
        raise ClusterParseError(f"expected a JSON object, got {type(doc).__name__}")
    raw_members = doc.get("members")
    if not isinstance(raw_members, list):
        raise ClusterParseError("missing 'members' list")

    members: list[Member] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_members):
        member = _parse_member(raw, index)
        if member.name in seen:
            raise ClusterParseError(f"member name {member.name!r} appears twice")
        seen.add(member.name)
        members.append(member)

    leaders = [m.name for m in members if m.is_leader]
    if len(leaders) > 1:
        raise ClusterParseError(f"more than one leader: {', '.join(leaders)}")
    pause = doc.get("pause", False)
    return ClusterView(
        members=tuple(members),
        leader=leaders[0] if leaders else None,
        paused=pause is True,
    )


def _parse_member(raw: object, index: int) -> Member:
    if not isinstance(raw, Mapping):
        raise ClusterParseError(f"members[{index}] is not an object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ClusterParseError(f"members[{index}] has no 'name' string")
    where = f"member {name!r}"
    role = raw.get("role")
    if not isinstance(role, str) or not role:
        raise ClusterParseError(f"{where} has no 'role' string")
    state = raw.get("state", "")
    if not isinstance(state, str):
        raise ClusterParseError(f"{where}: 'state' is not a string: {state!r}")

    host = raw.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ClusterParseError(f"{where}: 'host' is not a non-empty string: {host!r}")
    port = _optional_int(raw, "port", where)
    if port is not None and not 1 <= port <= 65535:
        raise ClusterParseError(f"{where}: 'port' {port} is out of range 1-65535")
    api_url = raw.get("api_url")
    if api_url is not None and not isinstance(api_url, str):
        raise ClusterParseError(f"{where}: 'api_url' is not a string: {api_url!r}")
    timeline = _optional_int(raw, "timeline", where)

    lag_raw = raw.get("lag")
    lag: int | None
    if lag_raw is None or lag_raw == "unknown":
        lag = None
    elif isinstance(lag_raw, int) and not isinstance(lag_raw, bool) and lag_raw >= 0:
        lag = lag_raw
    else:
        raise ClusterParseError(f"{where}: 'lag' must be bytes or 'unknown', got {lag_raw!r}")

    tags = raw.get("tags", {})
    if not isinstance(tags, Mapping):
        raise ClusterParseError(f"{where}: 'tags' is not an object: {tags!r}")
    return Member(
        name=name,
        role=role,
        state=state,
        host=host,
        port=port,
        api_url=api_url,
        lag=lag,
        timeline=timeline,
        tags=MappingProxyType(dict(tags)),
        # Patroni itself evaluates bool(tags["noloadbalance"]); agree with its /replica answer.
        noloadbalance=bool(tags.get("noloadbalance", False)),
    )


def _optional_int(raw: Mapping[str, Any], key: str, where: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClusterParseError(f"{where}: {key!r} is not an integer: {value!r}")
    return value
