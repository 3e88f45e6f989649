"""The RO side: pgbench -S throughput through each contender's RO address and straight to the
replicas, and how evenly 1000 fresh connections spread over the replicas (the replica events
are in `ro_events`)."""

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

from benchmarks.contenders import Endpoint
from benchmarks.recorder import REPO_ROOT
from benchmarks.switchover import (
    replicas,
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
