"""Parsing Patroni's /cluster answer and PostgreSQL-style sizes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgvip.patroni.cluster import (
    ClusterParseError,
    ClusterView,
    Member,
    parse_cluster,
)
from pgvip.units import SizeError, parse_size

# Shape of a Patroni 4.1 answer: leader, a streaming replica, a sync standby with unknown lag.
PATRONI_CLUSTER: dict[str, Any] = {
    "members": [
        {
            "name": "p1",
            "role": "leader",
            "state": "running",
            "api_url": "http://10.20.30.51:8008/patroni",
            "host": "10.20.30.51",
            "port": 5432,
            "timeline": 3,
            "tags": {"clonefrom": True},
        },
        {
            "name": "p2",
            "role": "replica",
            "state": "streaming",
            "api_url": "http://10.20.30.52:8008/patroni",
            "host": "10.20.30.52",
            "port": 5433,
            "timeline": 3,
            "lsn": "0/5000060",
            "lag": 1024,
            "receive_lsn": "0/5000060",
            "receive_lag": 0,
            "replay_lsn": "0/5000060",
            "replay_lag": 1024,
            "tags": {"noloadbalance": True, "pgvip_weight": 3},
        },
        {
            "name": "p3",
            "role": "sync_standby",
            "state": "running",
            "api_url": "http://10.20.30.53:8008/patroni",
            "host": "10.20.30.53",
            "port": 5432,
            "lsn": "unknown",
            "lag": "unknown",
        },
    ],
    "scope": "demo",
}


def test_parses_a_patroni_answer() -> None:
    view = parse_cluster(json.dumps(PATRONI_CLUSTER).encode())
    assert view.leader == "p1"
    assert [m.name for m in view.members] == ["p1", "p2", "p3"]
    p1, p2, p3 = view.members
    assert p1 == Member(
        name="p1",
        role="leader",
        state="running",
        host="10.20.30.51",
        port=5432,
        api_url="http://10.20.30.51:8008/patroni",
        lag=None,
        timeline=3,
        tags={"clonefrom": True},
        noloadbalance=False,
    )
    assert p1.is_leader and not p1.is_replica
    assert (p2.role, p2.state, p2.port, p2.lag, p2.noloadbalance) == (
        "replica",
        "streaming",
        5433,
        1024,
        True,
    )
    assert p2.tags["pgvip_weight"] == 3
    assert p3.is_replica and p3.lag is None and p3.timeline is None and dict(p3.tags) == {}
    assert view.leader_member is p1
    assert view.member("p3") is p3 and view.member("nope") is None
    assert view.paused is False


def test_accepts_str_and_decoded_json_alike() -> None:
    as_str = parse_cluster(json.dumps(PATRONI_CLUSTER))
    as_obj = parse_cluster(PATRONI_CLUSTER)
    assert as_str == as_obj
    assert isinstance(as_obj, ClusterView)


def test_members_are_hashable_and_tags_read_only() -> None:
    view = parse_cluster(PATRONI_CLUSTER)
    assert len({m for m in view.members}) == 3
    with pytest.raises(TypeError):
        view.members[1].tags["noloadbalance"] = False  # type: ignore[index]


def test_standby_leader_is_the_leader_and_no_leader_is_fine() -> None:
    doc = {
        "members": [
            {"name": "a", "role": "standby_leader", "state": "streaming", "host": "10.0.0.1"},
            {"name": "b", "role": "quorum_standby", "state": "streaming", "host": "10.0.0.2"},
        ]
    }
    view = parse_cluster(doc)
    assert view.leader == "a"
    assert view.members[1].is_replica
    leaderless = parse_cluster({"members": [doc["members"][1]], "pause": True})
    assert leaderless.leader is None and leaderless.leader_member is None
    assert leaderless.paused is True


def test_unknown_role_is_kept_but_is_neither_leader_nor_replica() -> None:
    view = parse_cluster({"members": [{"name": "x", "role": "witness", "state": "running"}]})
    (m,) = view.members
    assert m.role == "witness" and not m.is_leader and not m.is_replica
    assert m.host is None and m.port is None and m.api_url is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("", False), (1, True), (0, False)],
)
def test_noloadbalance_follows_patronis_truthiness(value: object, expected: bool) -> None:
    doc = {"members": [{"name": "r", "role": "replica", "tags": {"noloadbalance": value}}]}
    assert parse_cluster(doc).members[0].noloadbalance is expected


def _with(**changes: Any) -> dict[str, Any]:
    member = {"name": "r", "role": "replica", "state": "streaming", "host": "10.0.0.2"}
    member.update(changes)
    return {"members": [member]}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ([1, 2], "expected a JSON object, got list"),
        ({"scope": "demo"}, "missing 'members' list"),
        ({"members": {"name": "p1"}}, "missing 'members' list"),
        ({"members": ["p1"]}, "members[0] is not an object"),
        ({"members": [{"role": "replica"}]}, "members[0] has no 'name' string"),
        ({"members": [{"name": "p1"}]}, "member 'p1' has no 'role' string"),
        (_with(state=5), "'state' is not a string"),
        (_with(host=""), "'host' is not a non-empty string"),
        (_with(port="5432"), "'port' is not an integer"),
        (_with(port=True), "'port' is not an integer"),
        (_with(port=70000), "out of range"),
        (_with(timeline="3"), "'timeline' is not an integer"),
        (_with(lag="16MB"), "'lag' must be bytes or 'unknown'"),
        (_with(lag=-1), "'lag' must be bytes or 'unknown'"),
        (_with(tags=["nofailover"]), "'tags' is not an object"),
        (_with(api_url=8008), "'api_url' is not a string"),
    ],
)
def test_garbage_is_rejected_with_a_reason(body: Any, reason: str) -> None:
    with pytest.raises(ClusterParseError) as info:
        parse_cluster(body)
    assert reason in info.value.reason
    assert str(info.value).startswith("cannot parse Patroni /cluster answer: ")


def test_duplicate_names_and_two_leaders_are_rejected() -> None:
    twice = {"members": [{"name": "p1", "role": "replica"}, {"name": "p1", "role": "replica"}]}
    with pytest.raises(ClusterParseError, match="'p1' appears twice"):
        parse_cluster(twice)
    split = {"members": [{"name": "a", "role": "leader"}, {"name": "b", "role": "leader"}]}
    with pytest.raises(ClusterParseError, match="more than one leader: a, b"):
        parse_cluster(split)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("100B", 100),
        ("1kB", 1024),
        ("16MB", 16 * 1024**2),
        (" 16 MB ", 16 * 1024**2),
        ("1.5GB", 1536 * 1024**2),
        ("2TB", 2 * 1024**4),
        ("4097.5kB", 4195840),  # Patroni rounds fractional sizes
        (".5kB", 512),
    ],
)
def test_parse_size(value: int | str, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("16mb", "did you mean 'MB'"),
        ("16KB", "did you mean 'kB'"),
        ("16 parsecs", "unknown unit 'parsecs'"),
        ("MB", "not a number"),
        ("-1MB", "not a number"),
        (-1, "must not be negative"),
        (True, "number of bytes"),
        (1.5, "number of bytes"),
        ("", "not a number"),
    ],
)
def test_parse_size_errors(value: Any, message: str) -> None:
    with pytest.raises(SizeError, match=message):
        parse_size(value)
