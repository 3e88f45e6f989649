"""The demo's scenarios: each breaks a ready lab on purpose (switchover, kill -9 of the leader,
a replica restart), narrates what it does and waits until the cluster is ready again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pgvip.lab.demo_report import ScenarioResult
from pgvip.lab.errors import LabError
from pgvip.lab.layout import LabLayout

SCENARIOS = ("switchover", "kill-leader", "replica-restart")
FAILOVER_TIMEOUT = 60.0
RECOVER_TIMEOUT = 90.0
REPLICA_DOWN = 3.0  # how long the replica stays stopped


class DemoError(LabError):
    """The demo cannot run (no probe output, unknown scenario, lab not in a usable state).

    A LabError, so `pgvip lab demo` reports it as one line and exit status 2."""


class LabLike(Protocol):
    """What the demo needs of pgvip.lab.cluster.Lab."""

    layout: LabLayout
    pgvip: bool

    def members(self) -> list[dict[str, Any]]: ...
    def leader(self) -> str | None: ...
    def switchover(self, leader: str, candidate: str) -> None: ...
    def kill(self, node: str, what: str) -> None: ...
    def stop(self, node: str, what: str) -> None: ...
    def start(self, node: str, what: str) -> None: ...
    def reset(self, *, timeout: float = ...) -> None: ...
    def wait_ready(self, *, timeout: float, progress: Callable[[str], Any] = ...) -> None: ...
    def log_path(self, node_or_host: str, what: str) -> Path: ...


class Narrator(Protocol):
    """Where a scenario says what it does (the demo's timeline)."""

    def event(self, text: str, t: float | None = None) -> None: ...


def _replicas(lab: LabLike, leader: str | None) -> list[str]:
    members = lab.members()
    return [
        str(m["name"])
        for m in members
        if m.get("name") != leader
        and m.get("state") == "streaming"
        and m.get("role") not in ("leader", "master", "primary")
    ]


def new_leader_within(lab: LabLike, old: str, timeout: float, poll: float = 0.25) -> str | None:
    """The first leader other than `old` that Patroni names within `timeout`, else None.
    Also used by the benchmarks (benchmarks/switchover.py)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = lab.leader()
        if leader is not None and leader != old:
            return leader
        time.sleep(poll)
    return None


def _wait_leader_change(lab: LabLike, old: str, timeout: float) -> str:
    leader = new_leader_within(lab, old, timeout)
    if leader is None:
        raise DemoError(f"no new leader within {timeout:.0f} s after losing {old}")
    return leader


def _scenario_switchover(lab: LabLike, tl: Narrator, result: ScenarioResult) -> None:
    leader = lab.leader()
    if leader is None:
        raise DemoError("no leader to switch over from")
    candidates = _replicas(lab, leader)
    if not candidates:
        raise DemoError(f"no streaming replica to switch over to from {leader}")
    candidate = candidates[0]
    result.detail = f"{leader} -> {candidate}"
    result.t_event = time.monotonic()
    tl.event(f"switchover {leader} -> {candidate} (Patroni REST POST /switchover)")
    lab.switchover(leader, candidate)
    new = _wait_leader_change(lab, leader, FAILOVER_TIMEOUT)
    tl.event(f"Patroni reports leader {new}")
    lab.wait_ready(timeout=RECOVER_TIMEOUT, progress=lambda _m: None)
    tl.event("cluster ready again")


def _scenario_kill_leader(lab: LabLike, tl: Narrator, result: ScenarioResult) -> None:
    leader = lab.leader()
    if leader is None:
        raise DemoError("no leader to kill")
    result.t_event = time.monotonic()
    tl.event(f"kill -9 Patroni and PostgreSQL on leader {leader}")
    # Patroni first: it would restart a killed PostgreSQL at once.
    lab.kill(leader, "patroni")
    lab.kill(leader, "postgres")
    new = _wait_leader_change(lab, leader, FAILOVER_TIMEOUT)
    result.detail = f"{leader} -> {new}"
    tl.event(f"Patroni failed over to {new}; restarting Patroni on {leader}")
    lab.reset(timeout=RECOVER_TIMEOUT)
    tl.event(f"{leader} rejoined; cluster ready again")


def _scenario_replica_restart(lab: LabLike, tl: Narrator, result: ScenarioResult) -> None:
    leader = lab.leader()
    replicas = _replicas(lab, leader)
    if not replicas:
        raise DemoError("no streaming replica to restart")
    node = replicas[-1]
    result.detail = node
    result.t_event = time.monotonic()
    tl.event(f"stop Patroni (and PostgreSQL) on replica {node}")
    lab.stop(node, "patroni")
    time.sleep(REPLICA_DOWN)
    tl.event(f"start Patroni on {node}")
    lab.start(node, "patroni")
    lab.wait_ready(timeout=RECOVER_TIMEOUT, progress=lambda _m: None)
    tl.event(f"{node} streaming again; cluster ready")


RUNNERS: dict[str, Callable[[LabLike, Narrator, ScenarioResult], None]] = {
    "switchover": _scenario_switchover,
    "kill-leader": _scenario_kill_leader,
    "replica-restart": _scenario_replica_restart,
}
