"""Tests for pgvip.lab.scenarios against a fake lab: the leader wait and the refusals that come
before any fault is injected."""

from __future__ import annotations

from typing import Any

import pytest

from pgvip.lab import scenarios
from pgvip.lab.demo_report import ScenarioResult


class FakeLab:
    """Answers leader() from a script; records every fault call."""

    def __init__(self, leaders: list[str | None], members: list[dict[str, Any]]) -> None:
        self._leaders = leaders
        self._members = members
        self.calls: list[tuple[str, ...]] = []

    def leader(self) -> str | None:
        return self._leaders.pop(0) if len(self._leaders) > 1 else self._leaders[0]

    def members(self) -> list[dict[str, Any]]:
        return self._members

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **_kw: Any) -> None:
            self.calls.append((name, *map(str, args)))

        return record


class Events:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def event(self, text: str, t: float | None = None) -> None:
        self.texts.append(text)


def test_new_leader_within() -> None:
    lab = FakeLab(["p1", "p1", None, "p2"], [])
    assert scenarios.new_leader_within(lab, "p1", timeout=5.0, poll=0.0) == "p2"  # type: ignore[arg-type]
    assert scenarios.new_leader_within(FakeLab(["p1"], []), "p1", 0.05, 0.01) is None  # type: ignore[arg-type]


def test_switchover_needs_a_streaming_replica() -> None:
    members = [
        {"name": "p1", "role": "leader", "state": "running"},
        {"name": "p2", "role": "replica", "state": "starting"},
    ]
    lab = FakeLab(["p1"], members)
    result = ScenarioResult("switchover")
    with pytest.raises(scenarios.DemoError, match="no streaming replica to switch over to from p1"):
        scenarios.RUNNERS["switchover"](lab, Events(), result)  # type: ignore[arg-type]
    assert lab.calls == [] and result.t_event is None


def test_kill_leader_kills_patroni_before_postgres() -> None:
    lab = FakeLab(["p1", "p2"], [])
    events = Events()
    result = ScenarioResult("kill-leader")
    scenarios.RUNNERS["kill-leader"](lab, events, result)  # type: ignore[arg-type]
    assert lab.calls[:2] == [("kill", "p1", "patroni"), ("kill", "p1", "postgres")]
    assert result.detail == "p1 -> p2" and result.t_event is not None
    assert events.texts[0].startswith("kill -9 Patroni and PostgreSQL on leader p1")
