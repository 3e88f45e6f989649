"""The RO events: a replica taken away (Patroni stopped, its postmaster killed, or the whole
node cut off the switch) and brought back, or drained on purpose (Patroni tag noloadbalance),
while reads go through every RO contender at once; each event's failed reads and the time
from first to last failure, per contender and per client."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import analysis
from benchmarks.contenders import Contender, ContenderError, vip_holders
from benchmarks.recorder import ClientRun
from benchmarks.switchover import (
    DEFAULT_TIMING,
    RECOVER_TIMEOUT,
    ScenarioError,
    Timing,
    replicas,
    sql_identity,
)
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError

Log = Callable[[str], None]

# How a replica goes away, and the scenario its event is recorded as.
WAYS = {
    "stop": "replica-restart",  # Patroni SIGTERM: PostgreSQL's fast shutdown, then a restart
    "kill-postgres": "replica-pg-kill",  # kill -9 of the postmaster: Patroni restarts it
    "gone": "replica-gone",  # the node's switch port down (a power cut, a cable): then healed
}
# How long it stays away before it is brought back (kill-postgres: Patroni brings it back).
DOWN = {"stop": 3.0, "kill-postgres": 0.0, "gone": 5.0}
SCENARIOS = tuple(WAYS.values())


def wait_ro_ready(lab: Lab, contender: Contender, timeout: float = 60.0) -> float:
    """Wait until the RO side spreads over exactly the streaming replicas and answers reads."""
    endpoint = contender.ro_endpoint(lab)
    if endpoint is None:
        raise ScenarioError(f"{contender.name} has no RO side")
    deadline = time.monotonic() + timeout
    while True:
        leader = lab.leader()
        reps = replicas(lab, leader) if leader else []
        try:
            problem = contender.ro_problem(lab, reps)
        except ContenderError as exc:
            problem = str(exc)
        if problem is None:
            answer = sql_identity(lab, endpoint)
            if not (isinstance(answer, tuple) and answer[0] and answer[1] in reps):
                problem = f"{endpoint} answered {answer!r}; replicas are {', '.join(reps)}"
        if problem is None:
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise ScenarioError(
                f"{contender.name} RO side not ready after {timeout:.0f} s: {problem}"
            )
        time.sleep(0.2)


def run_replica_restart(
    lab: Lab,
    contenders: Sequence[Contender],
    client: ClientRun,
    node: str,
    *,
    how: str = "stop",
    down: float | None = None,
    reinclude_timeout: float = 20.0,
    timing: Timing = DEFAULT_TIMING,
    log: Log = print,
) -> dict[str, Any]:
    """Take `node`'s replica away the way `how` says (see WAYS), bring it back, and measure
    every RO contender's reads (client target name = contender name) until each has sent a
    read to `node` again (or `reinclude_timeout` after the cluster is ready)."""
    if how not in WAYS:
        raise ScenarioError(f"unknown way to take a replica away: {how!r} ({', '.join(WAYS)})")
    scenario = WAYS[how]
    down = DOWN[how] if down is None else down
    directed_by = vip_holders(lab, lab.layout.ro_vip)  # pgvip's RO director, if it runs
    t_event = time.monotonic()
    try:
        if how == "stop":
            lab.stop(node, "patroni")
        elif how == "kill-postgres":
            lab.kill(node, "postgres")
        else:
            lab.partition(node)
        t_stopped = time.monotonic()
        time.sleep(down)
        t_start = time.monotonic()
        if how == "stop":
            lab.start(node, "patroni")
        elif how == "gone":
            lab.heal(node)
        lab.wait_ready(timeout=RECOVER_TIMEOUT, progress=lambda _m: None)
    except LabError as exc:
        raise ScenarioError(f"{scenario} of {node}: {exc}") from exc
    t_cluster = time.monotonic()
    ready = {c.name: wait_ro_ready(lab, c) for c in contenders}
    names = [c.name for c in contenders]
    back = _wait_served(client, names, node, t_start, t_cluster + reinclude_timeout)
    t_end = max([t_cluster, *ready.values(), *(t for t in back.values() if t)]) + timing.settle
    time.sleep(max(0.0, t_end - time.monotonic()))
    client.wait_until(t_end, timeout=5.0)
    samples = client.snapshot()
    since = t_event - timing.baseline
    record: dict[str, Any] = {
        "scenario": scenario,
        "detail": node,
        "director": node in directed_by,
        "wall": time.time() - (time.monotonic() - t_event),
        "marks": {
            "stopped": round(t_stopped - t_event, 3),
            "started": round(t_start - t_event, 3),
            "cluster_ready": round(t_cluster - t_event, 3),
            "end": round(t_end - t_event, 3),
        },
        "contenders": {},
    }
    parts = []
    for c in contenders:
        gap = analysis.path_gap(samples, c.name, t_event, t_end, since=since, stable=timing.stable)
        first = back[c.name]
        record["contenders"][c.name] = {
            "path": gap.as_dict(),
            "ready": round(ready[c.name] - t_event, 3),
            # From Patroni reporting the replica streaming again to the first read it served;
            # None: not within reinclude_timeout.
            "reincluded_after": None if first is None else round(first - t_cluster, 3),
            "served": analysis.nodes_served(samples, c.name, t_event, t_end),
            "failures": analysis.failure_summary(samples, c.name, t_event, t_end),
        }
        if analysis.tried(samples, f"app_{c.name}"):
            record["contenders"][c.name]["app"] = analysis.failure_summary(
                samples, f"app_{c.name}", t_event, t_end
            )
        app = record["contenders"][c.name].get("app")
        app_text = (f"app client {app['count']} failed over {app['window']:.2f} s, "
                    if app else "")  # fmt: skip
        parts.append(
            f"{c.name} failed reads {gap.failures + gap.later_failures}, gap {_fmt(gap.gap)}, "
            + app_text
            + ("back " + _fmt(record["contenders"][c.name]["reincluded_after"]) + " after ready"
               if first is not None else "not back")
        )  # fmt: skip
    apps = [f"app_{n}" for n in names if analysis.tried(samples, f"app_{n}")]
    record["samples"] = analysis.compact_samples(
        samples, names + apps, t_event, since, t_end, nodes=names
    )
    role = " (the RO director)" if node in directed_by else ""
    log(f"    {scenario} {node}{role}: " + "; ".join(parts))
    return record


def run_replica_drain(
    lab: Lab,
    contenders: Sequence[Contender],
    client: ClientRun,
    node: str,
    *,
    hold: float = 3.0,
    reinclude_timeout: float = 30.0,
    timing: Timing = DEFAULT_TIMING,
    log: Log = print,
) -> dict[str, Any]:
    """Drain `node` on purpose (Patroni tag noloadbalance), hold it `hold` s after every
    contender stopped sending it reads, then clear the tag; count every failed read meanwhile
    (a drain should cost none) and how long each contender took to stop and to resume."""
    names = [c.name for c in contenders]
    t_event = time.monotonic()
    try:
        lab.set_tag(node, "noloadbalance", True)
    except LabError as exc:
        raise ScenarioError(f"drain of {node}: {exc}") from exc
    left = _wait_not_served(client, names, node, t_event, t_event + reinclude_timeout)
    t_undrain = max([t_event, *(t for t in left.values() if t)]) + hold
    time.sleep(max(0.0, t_undrain - time.monotonic()))
    try:
        lab.set_tag(node, "noloadbalance", False)
    except LabError as exc:
        raise ScenarioError(f"un-drain of {node}: {exc}") from exc
    back = _wait_served(client, names, node, t_undrain, t_undrain + reinclude_timeout)
    t_end = max([t_undrain, *(t for t in back.values() if t)]) + timing.settle
    time.sleep(max(0.0, t_end - time.monotonic()))
    client.wait_until(t_end, timeout=5.0)
    samples = client.snapshot()
    record: dict[str, Any] = {
        "scenario": "replica-drain",
        "detail": node,
        "wall": time.time() - (time.monotonic() - t_event),
        "marks": {"undrained": round(t_undrain - t_event, 3), "end": round(t_end - t_event, 3)},
        "contenders": {},
    }
    parts = []
    for c in contenders:
        t_left, t_back = left[c.name], back[c.name]
        entry: dict[str, Any] = {
            "failures": analysis.failure_summary(samples, c.name, t_event, t_end),
            # From setting the tag to the last read `node` served (None: it never stopped).
            "left_after": None if t_left is None else round(t_left - t_event, 3),
            "back_after": None if t_back is None else round(t_back - t_undrain, 3),
            "served": analysis.nodes_served(samples, c.name, t_event, t_end),
        }
        if analysis.tried(samples, f"app_{c.name}"):
            entry["app"] = analysis.failure_summary(samples, f"app_{c.name}", t_event, t_end)
        record["contenders"][c.name] = entry
        app = entry.get("app") or {"count": "-"}
        parts.append(
            f"{c.name} failed reads {entry['failures']['count']} (app client {app['count']}), "
            f"out after {_fmt(entry['left_after'])}, back {_fmt(entry['back_after'])}"
        )
    apps = [f"app_{n}" for n in names if analysis.tried(samples, f"app_{n}")]
    record["samples"] = analysis.compact_samples(
        samples, names + apps, t_event, t_event - timing.baseline, t_end, nodes=names
    )
    log(f"    replica-drain {node}: " + "; ".join(parts))
    return record


def _wait_not_served(
    client: ClientRun, names: Sequence[str], node: str, since: float, deadline: float
) -> dict[str, float | None]:
    """When each target last had a read answered by `node`, once a second has passed with
    none (None: it kept serving until the deadline)."""
    last: dict[str, float | None] = dict.fromkeys(names)
    while time.monotonic() < deadline:
        samples = client.snapshot()
        now = client.latest_t() or since
        done = True
        for name in names:
            served = [float(x["t"]) for x in samples if float(x["t"]) >= since
                      and x.get(f"{name}_ok") and x.get(f"{name}_node") == node]  # fmt: skip
            last[name] = max(served) if served else since
            if now - (last[name] or since) < 1.0:
                done = False
        if done:
            return last
        time.sleep(0.1)
    return dict.fromkeys(names)


def _wait_served(
    client: ClientRun, names: Sequence[str], node: str, since: float, deadline: float
) -> dict[str, float | None]:
    """When each target first had a read answered by `node` at or after `since`."""
    found: dict[str, float | None] = dict.fromkeys(names)
    while True:
        samples = client.snapshot()
        for name in names:
            if found[name] is None:
                found[name] = analysis.first_served_by(samples, name, node, since, float("inf"))
        if all(v is not None for v in found.values()) or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _fmt(value: float | None) -> str:
    return "no recovery" if value is None else f"{value:.2f} s"
