"""The RO side: pgbench -S throughput through each contender's RO address and straight to the
replicas, how evenly 1000 fresh connections spread over the replicas, and a replica stopped and
restarted while reads go through every RO contender at once."""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import analysis
from benchmarks.contenders import Contender, ContenderError, Endpoint
from benchmarks.recorder import REPO_ROOT, ClientRun
from benchmarks.switchover import (
    DEFAULT_TIMING,
    RECOVER_TIMEOUT,
    ScenarioError,
    Timing,
    replicas,
    sql_identity,
)
from pgvip.lab import processes
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import PG_PORT, SUPERUSER, SUPERUSER_PASSWORD

TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
Log = Callable[[str], None]


class ThroughputError(RuntimeError):
    """pgbench or the balance client failed, or their output could not be read."""


def parse_tps(output: str) -> float:
    """The tps pgbench reports excluding connection time."""
    match = TPS_RE.search(output)
    if match is None:
        raise ThroughputError(
            f"no 'tps = ... (without initial connection time)' in: {output[-300:]}"
        )
    return float(match.group(1))


def split_clients(clients: int, targets: int) -> list[int]:
    """Spread `clients` over `targets` as evenly as possible (4 over 2 -> [2, 2])."""
    if targets < 1 or clients < targets:
        raise ThroughputError(f"cannot spread {clients} clients over {targets} targets")
    base, extra = divmod(clients, targets)
    return [base + (1 if i < extra else 0) for i in range(targets)]


def balance_ratio(counts: dict[str, int], backends: Sequence[str]) -> float | None:
    """max/min connections per backend (a backend that got none makes it infinite: None)."""
    values = [counts.get(b, 0) for b in backends]
    if not values or min(values) == 0:
        return None
    return round(max(values) / min(values), 3)


def _pgbench_env() -> dict[str, str]:
    return {**processes.CLEAN_ENV, "PGPASSWORD": SUPERUSER_PASSWORD}


def init_pgbench(lab: Lab, leader: str, scale: int, log: Log) -> None:
    """pgbench -i on the leader, then wait until every replica has replayed the tables."""
    host = str(lab.layout.node_ip(leader))
    argv = [str(lab.pg_bin / "pgbench"), "-i", "-q", "-s", str(scale), "-h", host,
            "-p", str(PG_PORT), "-U", SUPERUSER, "postgres"]  # fmt: skip
    proc = lab.run("client", argv, timeout=300, env=_pgbench_env())
    if proc.returncode != 0:
        raise ThroughputError(f"pgbench -i on {leader} failed: {proc.stderr.strip()[-300:]}")
    want = scale * 100000
    deadline = time.monotonic() + 60
    for node in replicas(lab, leader):
        while True:
            answer = _scalar(lab, node, "select count(*) from pgbench_accounts")
            if answer == str(want):
                break
            if time.monotonic() > deadline:
                raise ThroughputError(f"{node} has not replayed pgbench_accounts: {answer}")
            time.sleep(0.5)
    log(f"  pgbench tables (scale {scale}) on {leader}, replayed on every replica")


def _scalar(lab: Lab, node: str, sql: str) -> str:
    argv = [str(lab.pg_bin / "psql"), "-X", "-At", "-c", sql,
            f"host={lab.layout.node_ip(node)} port={PG_PORT} user={SUPERUSER} dbname=postgres "
            "connect_timeout=2"]  # fmt: skip
    proc = lab.run("client", argv, timeout=10, env=_pgbench_env())
    return proc.stdout.strip() if proc.returncode == 0 else proc.stderr.strip()


def run_pgbench(
    lab: Lab, endpoints: Sequence[Endpoint], *, clients: int, seconds: int
) -> dict[str, Any]:
    """pgbench -S with `clients` spread over `endpoints`, all at once; tps summed."""
    shares = split_clients(clients, len(endpoints))
    results: list[Any] = [None] * len(endpoints)

    def one(i: int, ep: Endpoint, c: int) -> None:
        # One pgbench thread per two clients, so the direct run (two processes) uses as many
        # client threads as a run through one address.
        argv = [str(lab.pg_bin / "pgbench"), "-S", "-n", "-c", str(c), "-j", str(max(1, c // 2)),
                "-T", str(seconds), "-h", ep.host, "-p", str(ep.port), "-U", SUPERUSER,
                "postgres"]  # fmt: skip
        try:
            results[i] = lab.run("client", argv, timeout=seconds + 60, env=_pgbench_env())
        except LabError as exc:
            results[i] = exc

    threads = [
        threading.Thread(target=one, args=(i, ep, c))
        for i, (ep, c) in enumerate(zip(endpoints, shares, strict=True))
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tps = []
    for ep, res in zip(endpoints, results, strict=True):
        if isinstance(res, Exception):
            raise ThroughputError(f"pgbench against {ep}: {res}")
        if res.returncode != 0:
            raise ThroughputError(f"pgbench against {ep} failed: {res.stderr.strip()[-300:]}")
        tps.append(parse_tps(res.stdout))
    return {"tps": round(sum(tps), 1), "per_endpoint": [round(t, 1) for t in tps],
            "clients": shares}  # fmt: skip


def measure_balance(lab: Lab, endpoint: Endpoint, connects: int) -> dict[str, Any]:
    """`connects` fresh connections through `endpoint`, each asking which node answered."""
    argv = [
        sys.executable, "-m", "benchmarks.ro_throughput", "balance",
        "--host", endpoint.host, "--port", str(endpoint.port), "--n", str(connects),
    ]  # fmt: skip
    env = {**processes.CLEAN_ENV, "PYTHONPATH": str(REPO_ROOT)}
    proc = lab.run("client", argv, timeout=connects * 2 + 30, env=env)
    if proc.returncode != 0:
        raise ThroughputError(f"balance client failed: {proc.stderr.strip()[-300:]}")
    return dict(json.loads(proc.stdout))


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
    down: float = 3.0,
    reinclude_timeout: float = 20.0,
    timing: Timing = DEFAULT_TIMING,
    log: Log = print,
) -> dict[str, Any]:
    """Stop `node`'s Patroni (and so its PostgreSQL), start it `down` s later, and measure every
    RO contender's reads (client target name = contender name) until each has sent a read to
    `node` again (or `reinclude_timeout` after the cluster is ready)."""
    t_event = time.monotonic()
    try:
        lab.stop(node, "patroni")
        t_stopped = time.monotonic()
        time.sleep(down)
        t_start = time.monotonic()
        lab.start(node, "patroni")
        lab.wait_ready(timeout=RECOVER_TIMEOUT, progress=lambda _m: None)
    except LabError as exc:
        raise ScenarioError(f"replica restart of {node}: {exc}") from exc
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
        "scenario": "replica-restart",
        "detail": node,
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
    log(f"    replica-restart {node}: " + "; ".join(parts))
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


# -- the balance client (runs in the client namespace) -------------------------------


def balance_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ro_throughput balance")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=PG_PORT)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    import psycopg

    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    started = time.monotonic()
    for _ in range(args.n):
        try:
            with psycopg.connect(
                host=args.host, port=args.port, user=SUPERUSER, password=SUPERUSER_PASSWORD,
                dbname="postgres", connect_timeout=max(2, int(args.timeout)),
                sslmode="disable", gssencmode="disable", application_name="pgvip-bench-balance",
            ) as conn:  # fmt: skip
                row = conn.execute("select current_setting('pgvip.node', true)").fetchone()
            counts[str(row[0] if row else "?")] += 1
        except psycopg.Error as exc:
            errors[type(exc).__name__] += 1
    json.dump(
        {
            "counts": dict(sorted(counts.items())),
            "errors": dict(errors),
            "seconds": round(time.monotonic() - started, 2),
        },
        sys.stdout,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["balance"]:
        return balance_main(args[1:])
    print("usage: python -m benchmarks.ro_throughput balance --host H [--port P] [--n N]\n"
          "(the RO phase itself runs from `python -m benchmarks`)", file=sys.stderr)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main())
