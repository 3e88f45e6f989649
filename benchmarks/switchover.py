"""RW events: a planned switchover through Patroni's REST API and a kill -9 of the leader's
Patroni + PostgreSQL, each measured through one contender while a writer that follows the leader
directly gives Patroni's own gap; `python -m benchmarks.switchover` runs only switchovers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import analysis
from benchmarks.contenders import Contender, ContenderError, Endpoint
from benchmarks.recorder import ChangePoller, ClientRun
from pgvip.lab import processes
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import SUPERUSER, SUPERUSER_PASSWORD
from pgvip.lab.sampler import VipSampler
from pgvip.lab.scenarios import new_leader_within
from pgvip.patroni.roles import PRIMARY_ROLES

RW_SCENARIOS = ("switchover", "kill")
APP_COLUMNS = ("app_rw", "app_leader", "libpq_rw", "libpq_leader", "pool_rw")
FAILOVER_TIMEOUT = 60.0
RECOVER_TIMEOUT = 90.0
READY_TIMEOUT = 60.0

Log = Callable[[str], None]


class ScenarioError(RuntimeError):
    """An event could not be run or the lab did not come back from it."""


@dataclass(frozen=True)
class Timing:
    """How an event is framed: samples before it, and how long the window runs after recovery."""

    baseline: float = 1.5
    settle: float = 1.5
    stable: float = analysis.STABLE


DEFAULT_TIMING = Timing()


# -- asking the lab ----------------------------------------------------------


def sql_identity(lab: Lab, endpoint: Endpoint) -> tuple[bool, str] | str:
    """(in recovery?, node) of whoever answers SQL at `endpoint` from the client namespace, or
    the reason nobody does."""
    conninfo = (
        f"host={endpoint.host} port={endpoint.port} user={SUPERUSER} "
        f"password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2"
    )
    argv = [
        str(lab.pg_bin / "psql"), "-X", "-At", "-c",
        "select pg_is_in_recovery(), current_setting('pgvip.node', true)", conninfo,
    ]  # fmt: skip
    try:
        proc = lab.run("client", argv, timeout=6, env=processes.CLEAN_ENV)
    except LabError as exc:
        return f"psql: {exc}"
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["psql failed"])[-1]
    recovery, _, node = proc.stdout.strip().partition("|")
    return recovery == "t", node


def replicas(lab: Lab, leader: str | None) -> list[str]:
    """Streaming replicas per Patroni's /cluster, in node order."""
    members = {str(m.get("name")): m for m in lab.members()}
    return [
        n
        for n in lab.layout.node_names()
        if n != leader
        and members.get(n, {}).get("state") == "streaming"
        and members.get(n, {}).get("role") not in PRIMARY_ROLES
    ]


def wait_rw_ready(lab: Lab, contender: Contender, timeout: float = READY_TIMEOUT) -> float:
    """Wait until the contender's RW side points at exactly the leader and takes a write there.

    Returns the monotonic time it did; ScenarioError with the last reason otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        leader = lab.leader()
        problem: str | None = "no leader" if leader is None else None
        if leader is not None:
            try:
                problem = contender.rw_problem(lab, leader)
            except ContenderError as exc:
                problem = str(exc)
        if problem is None and leader is not None:
            answer = sql_identity(lab, contender.rw_endpoint(lab))
            if answer != (False, leader):
                problem = f"{contender.rw_endpoint(lab)} answered {answer!r}, leader is {leader}"
        if problem is None:
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise ScenarioError(
                f"{contender.name} RW side not ready after {timeout:.0f} s: {problem}"
            )
        time.sleep(0.1)


def wait_leader_change(lab: Lab, old: str, timeout: float = FAILOVER_TIMEOUT) -> str:
    leader = new_leader_within(lab, old, timeout, poll=0.1)
    if leader is None:
        raise ScenarioError(f"no new leader within {timeout:.0f} s after losing {old}")
    return leader


def next_candidate(nodes: Sequence[str], leader: str, streaming: Sequence[str]) -> str:
    """The streaming replica after `leader` in node order, so leadership goes round the nodes."""
    if not streaming:
        raise ScenarioError(f"no streaming replica to switch over to from {leader}")
    order = list(nodes)
    start = order.index(leader)
    for step in range(1, len(order)):
        node = order[(start + step) % len(order)]
        if node in streaming:
            return node
    raise ScenarioError(f"no streaming replica among {', '.join(streaming)}")


# -- faults ------------------------------------------------------------------


def _switchover(lab: Lab) -> tuple[str, float, str]:
    leader = lab.leader()
    if leader is None:
        raise ScenarioError("no leader to switch over from")
    candidate = next_candidate(lab.layout.node_names(), leader, replicas(lab, leader))
    t_event = time.monotonic()
    try:
        lab.switchover(leader, candidate)
    except LabError as exc:
        raise ScenarioError(str(exc)) from exc
    wait_leader_change(lab, leader)
    lab.wait_ready(timeout=RECOVER_TIMEOUT, progress=lambda _m: None)
    return leader, t_event, f"{leader} -> {candidate}"


def _kill(lab: Lab) -> tuple[str, float, str]:
    leader = lab.leader()
    if leader is None:
        raise ScenarioError("no leader to kill")
    t_event = time.monotonic()
    # Patroni first: it would restart a killed PostgreSQL at once.
    lab.kill(leader, "patroni")
    lab.kill(leader, "postgres")
    new = wait_leader_change(lab, leader)
    lab.reset(timeout=RECOVER_TIMEOUT)  # restart Patroni on the old leader; wait until it streams
    return leader, t_event, f"{leader} -> {new}"


FAULTS: dict[str, Callable[[Lab], tuple[str, float, str]]] = {
    "switchover": _switchover,
    "kill": _kill,
}


# -- one event -----------------------------------------------------------------


def run_rw_event(
    lab: Lab,
    contender: Contender,
    scenario: str,
    client: ClientRun,
    *,
    sampler: VipSampler | None = None,
    router: ChangePoller | None = None,
    timing: Timing = DEFAULT_TIMING,
    log: Log = print,
) -> dict[str, Any]:
    """Inject one fault while `client` writes through the contender ('rw') and to the leader.

    The contender must be ready (wait_rw_ready) and the client running for `timing.baseline`.
    Returns the event's record; a fault that could not be run raises ScenarioError.
    """
    if scenario not in FAULTS:
        raise ScenarioError(f"unknown RW scenario {scenario!r}; choose from {', '.join(FAULTS)}")
    try:
        old_leader, t_event, detail = FAULTS[scenario](lab)
    except LabError as exc:
        raise ScenarioError(f"{scenario}: {exc}") from exc
    t_cluster = time.monotonic()
    t_ready = wait_rw_ready(lab, contender)
    t_end = max(t_cluster, t_ready) + timing.settle
    time.sleep(max(0.0, t_end - time.monotonic()))
    client.wait_until(t_end, timeout=5.0)

    samples = client.snapshot()
    since = t_event - timing.baseline
    patroni = analysis.path_gap(
        samples, "leader", t_event, t_end, since=since, stable=timing.stable
    )
    through = analysis.path_gap(samples, "rw", t_event, t_end, since=since, stable=timing.stable)
    seen = analysis.first_change(samples, "leader", old_leader, t_event)
    record: dict[str, Any] = {
        "contender": contender.name,
        "scenario": scenario,
        "detail": detail,
        "wall": time.time() - (time.monotonic() - t_event),
        "marks": {
            "new_leader_seen": None if seen is None else round(seen[0] - t_event, 3),
            "cluster_ready": round(t_cluster - t_event, 3),
            "contender_ready": round(t_ready - t_event, 3),
            "end": round(t_end - t_event, 3),
        },
        "patroni": patroni.as_dict(),
        "through": through.as_dict(),
        "attributable": analysis.attributable(through, patroni),
        "read_only_writes": through.errors.get("read_only", 0),
        "valid": patroni.worked_before and through.worked_before,
    }
    record["app"] = analysis.app_record(samples, t_event, t_end, since=since, stable=timing.stable)
    if sampler is not None:
        vip = contender.vip(lab)
        timeline = [(c.t, c.holders) for c in sampler.timeline(vip)] if vip else []
        record["holders"] = analysis.holders_in_window(timeline, since, t_end).as_dict(t_event)
    if router is not None:
        timeline = [(t, v) for t, v in router.timeline if v is not None]
        record["routing"] = analysis.holders_in_window(timeline, since, t_end).as_dict(t_event)
    paths = ["rw", "leader"] + [p for p in APP_COLUMNS if analysis.tried(samples, p)]
    record["samples"] = analysis.compact_samples(samples, paths, t_event, since, t_end)
    gap = through.gap
    app = record["app"].get("persistent")
    if app is not None:
        f = app["failures"]
        log(f"    {'':<10} {'':<9} app client (a): extra {_fmt(app['extra'], sign=True)}, "
            f"{f['count']} failed over {f['window']:.2f} s {f['kinds'] or ''}")  # fmt: skip
    log(
        f"    {scenario:<10} {detail:<9} Patroni {_fmt(patroni.gap)}  {contender.name} "
        f"{_fmt(gap)}  attributable {_fmt(record['attributable'], sign=True)}"
        + (f"  read-only writes {record['read_only_writes']}" if record["read_only_writes"] else "")
        + ("" if record["valid"] else "  (a path was failing before the event)")
    )
    return record


def _fmt(value: float | None, *, sign: bool = False) -> str:
    if value is None:
        return "no recovery"
    return f"{value:+.2f} s" if sign else f"{value:.2f} s"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m benchmarks.switchover`: the suite with switchovers only (Issue 3)."""
    from benchmarks.__main__ import main as suite_main

    args = list(argv) if argv is not None else __import__("sys").argv[1:]
    return suite_main(["run", "--only", "switchover", *args])


if __name__ == "__main__":
    raise SystemExit(main())
