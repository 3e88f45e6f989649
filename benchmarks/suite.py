"""The whole run: build a lab without pgvip, add the proxy host, then give each contender its
turn (order rotated every round, so machine noise and "what ran before" hit all alike) for the RW
events, then the RO phase; everything measured goes into one JSON document, written even when the
run stops half-way, and the lab always comes down."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import random
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import footprint, labext, report
from benchmarks.client import CREATE_TABLE
from benchmarks.contenders import Contender, ContenderError, Endpoint
from benchmarks.contenders.keepalived import KeepalivedSettings
from benchmarks.contenders.registry import UNAVAILABLE, make, make_all
from benchmarks.recorder import REPO_ROOT, ChangePoller, ClientRun, RecorderError
from benchmarks.ro_events import WAYS, run_replica_drain, run_replica_restart, wait_ro_ready
from benchmarks.ro_throughput import ThroughputError, init_pgbench, measure_balance, run_pgbench
from benchmarks.switchover import (
    ScenarioError,
    Timing,
    replicas,
    run_rw_event,
    wait_rw_ready,
)
from pgvip.lab import render
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import PG_PORT, SUPERUSER, LabLayout
from pgvip.lab.sampler import VipSampler

SCHEMA = 1
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
Log = Callable[[str], None]


class SuiteError(RuntimeError):
    """The run cannot start or cannot go on (lab down for good, bad settings)."""


@dataclass
class Settings:
    """Everything a run is parameterised by; stored in the results as is."""

    prefix: str = "pgvb"
    subnet: str = "10.20.36.0/24"
    contenders: list[str] = field(
        default_factory=lambda: ["pgvip-lab", "pgvip-stock", "keepalived", "haproxy"]
    )
    rounds: int = 3
    switchovers_per_round: int = 3
    kills_per_round: int = 1
    ro: bool = True
    pgvip_ro: bool = True  # also try pgvip's RO VIP in the RO phase
    replica_restarts: int = 9
    replica_kills: int = 3  # kill -9 of a replica's postmaster
    replica_gone: int = 3  # a replica's node cut off the switch for 5 s
    replica_drains: int = 3
    # Application-model clients beside the sampler (pgvip/lab/app_clients.py).
    app_models: list[str] = field(default_factory=lambda: ["persistent", "libpq", "pool"])
    pgbench_clients: int = 4
    pgbench_seconds: int = 15
    pgbench_rounds: int = 3
    pgbench_scale: int = 1
    balance_connects: int = 1000
    footprint_window: float = 10.0
    interval: float = 0.02
    timeout: float = 1.0
    baseline: float = 1.5
    settle: float = 1.5
    # A random pause of up to `jitter` s before each event, so events do not land at the same
    # phase of the contenders' own timers (keepalived's 1 s check, HAProxy's 3 s inter) every
    # time; seeded, so a run's schedule is reproducible.
    jitter: float = 3.0
    seed: int = 1
    keepalived_weight: int = 0
    keepalived_vrrp_version: int = 3
    out_dir: str = str(RESULTS_DIR)
    keep_lab: bool = False

    def validate(self) -> None:
        if self.rounds < 0 or self.switchovers_per_round < 0 or self.kills_per_round < 0:
            raise SuiteError("rounds and per-round counts must be >= 0")
        if not self.contenders and not self.ro:
            raise SuiteError("nothing to run: no RW contenders and --no-ro")
        for name in self.contenders:
            make(name)  # ContenderError names the unknown one
        if self.pgbench_clients < 2:
            raise SuiteError("--clients must be >= 2 (the direct run splits them over 2 replicas)")
        from pgvip.lab.app_clients import MODELS

        unknown = [m for m in self.app_models if m not in MODELS]
        if unknown:
            raise SuiteError(f"unknown --app-models {unknown}; choose from {', '.join(MODELS)}")
        if self.interval <= 0 or self.timeout <= 0:
            raise SuiteError("--interval and --timeout must be positive")

    def scenarios(self) -> list[str]:
        return ["switchover"] * self.switchovers_per_round + ["kill"] * self.kills_per_round

    def timing(self) -> Timing:
        return Timing(baseline=self.baseline, settle=self.settle)


# -- facts about the machine -------------------------------------------------------


def _cmd_version(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else f"unknown (exit {proc.returncode})"


def _pkg(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _cmd_version(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(lab: Lab) -> dict[str, str]:
    from pgvip import __version__

    commit = _cmd_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_version(["sh", "-c", f"git -C {REPO_ROOT} status --porcelain | wc -l"])
    return {
        "pgvip": f"{__version__} (git {commit}, {dirty} uncommitted paths)",
        "python": platform.python_version(),
        "patroni": _pkg("patroni"),
        "postgresql": _cmd_version([str(lab.pg_bin / "postgres"), "--version"]),
        "etcd": _cmd_version(["etcd", "--version"]),
        "keepalived": _cmd_version(["sh", "-c", "keepalived --version 2>&1"]),
        "haproxy": _cmd_version(["haproxy", "-v"]),
        "pyroute2": _pkg("pyroute2"),
        "psycopg": _pkg("psycopg"),
        "aiohttp": _pkg("aiohttp"),
    }


# -- the run ----------------------------------------------------------------------


class Suite:
    def __init__(self, settings: Settings, log: Log = print) -> None:
        settings.validate()
        self.s = settings
        self._log = log
        self._t0 = time.monotonic()
        self.run_id = dt.datetime.now(dt.UTC).strftime("run-%Y%m%d-%H%M%S")
        self.layout = LabLayout.create(prefix=settings.prefix, subnet=settings.subnet, nodes=3)
        self.lab = Lab(self.layout, pgvip=False)
        self.rng = random.Random(settings.seed)
        self._last_pause = 0.0
        self.results: dict[str, Any] = {
            "schema": SCHEMA,
            "run_id": self.run_id,
            "complete": False,
            "settings": asdict(settings),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_facts(),
            "lab": {
                "prefix": settings.prefix,
                "subnet": settings.subnet,
                "nodes": 3,
                "patroni": {
                    "ttl": render.TTL,
                    "loop_wait": render.LOOP_WAIT,
                    "retry_timeout": render.RETRY_TIMEOUT,
                },  # fmt: skip
            },
            "unavailable": dict(UNAVAILABLE),
            "contenders": {},
            "startup": {},
            "footprint": {},
            "patroni_load": {},
            "events": [],
            "errors": [],
            "ro": None,
        }

    def log(self, msg: str) -> None:
        self._log(f"[{time.monotonic() - self._t0:7.1f}s] {msg}")

    @property
    def out_path(self) -> Path:
        return Path(self.s.out_dir) / f"{self.run_id}.json"

    def save(self) -> Path:
        path = self.out_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(report.dumps(self.results))
        tmp.replace(path)
        return path

    # -- lab lifecycle --------------------------------------------------------------

    def _lab_up(self) -> None:
        if self.layout.state_file.exists():
            stale = Lab.load(self.layout.prefix, self.layout.root)
            owner = stale.owner()
            if owner is not None and owner != os.getpid():
                raise SuiteError(
                    f"lab {self.layout.prefix!r} belongs to the running process {owner}; "
                    "pass another --prefix and --subnet"
                )
            self.log(f"removing a stale lab {self.layout.prefix}")
            stale.down()
        self.log(f"lab {self.layout.prefix} up on {self.layout.subnet} (Patroni only)")
        self.lab.up(timeout=120, progress=lambda m: None)
        self.results["versions"] = versions(self.lab)
        leader = self.lab.leader()
        if leader is None:
            raise SuiteError("the lab is ready but names no leader")
        argv = [str(self.lab.pg_bin / "psql"), "-X", "-q", "-c", CREATE_TABLE,
                f"host={self.layout.node_ip(leader)} port={PG_PORT} user={SUPERUSER} "
                "password=postgres dbname=postgres"]  # fmt: skip
        proc = self.lab.run("client", argv, timeout=30)
        if proc.returncode != 0:
            raise SuiteError(f"cannot create the benchmark table: {proc.stderr.strip()}")
        labext.add_host(self.lab)
        self.log(f"ready: leader {leader}; proxy host {labext.host_ip(self.lab)}")

    def _lab_down(self) -> None:
        if self.s.keep_lab:
            self.log(f"lab kept: `pgvip lab down --prefix {self.layout.prefix}` removes it")
            return
        self.log(f"lab {self.layout.prefix} down")
        try:
            self.lab.down()
        except LabError as exc:
            self.results["errors"].append(f"lab down: {exc}")
            self.log(f"WARNING: {exc}")

    def run(self) -> Path:
        try:
            self._lab_up()
            if self.s.footprint_window > 0:
                self._footprint(None)  # Patroni's own idle load, no contender running
            for c in make_all(self.s.contenders, keepalived=self._keepalived()):
                self.results["contenders"][c.name] = c.describe(self.lab).as_dict()
            self._rw_phase()
            if self.s.ro:
                self._ro_phase()
            self.results["complete"] = True
        except KeyboardInterrupt:
            self.results["errors"].append("interrupted")
            self.log("interrupted: saving what was measured")
        except (SuiteError, LabError, ContenderError, ScenarioError, RecorderError) as exc:
            self.results["errors"].append(f"{type(exc).__name__}: {exc}")
            self.log(f"ERROR: {exc}")
        finally:
            self.results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
            self.results["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self.results["duration_s"] = round(time.monotonic() - self._t0, 1)
            self._lab_down()
            path = self.save()
            self.log(f"results: {path}")
        return path

    def _keepalived(self) -> KeepalivedSettings:
        return KeepalivedSettings(
            weight=self.s.keepalived_weight, vrrp_version=self.s.keepalived_vrrp_version
        )

    # -- RW ------------------------------------------------------------------------

    def _rw_phase(self) -> None:
        contenders = make_all(self.s.contenders, keepalived=self._keepalived())
        if not contenders or not self.s.scenarios():
            return
        for rnd in range(self.s.rounds):
            shift = rnd % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            for c in order:
                self.log(f"round {rnd + 1}/{self.s.rounds}: {c.name}")
                self._slot(c, rnd)
                self.save()

    def _slot(self, c: Contender, rnd: int) -> None:
        lab = self.lab
        try:
            lab.wait_ready(timeout=90, progress=lambda m: None)
        except LabError as exc:
            self.log(f"  the lab is not ready ({exc}); resetting it")
            lab.reset(timeout=120)
        t_start = time.monotonic()
        sampler: VipSampler | None = None
        router: ChangePoller | None = None
        client: ClientRun | None = None
        try:
            try:
                c.start(lab)
                t_ready = wait_rw_ready(lab, c)
            except (ScenarioError, ContenderError) as exc:
                self.results["errors"].append(f"{c.name} round {rnd + 1}: {exc}")
                self.log(f"  {c.name} never became ready: {exc}")
                return
            self.results["startup"].setdefault(c.name, []).append(round(t_ready - t_start, 2))
            if c.name not in self.results["footprint"] and self.s.footprint_window > 0:
                self._footprint(c)
            vip = c.vip(lab)
            if vip is not None:
                sampler = VipSampler(self.layout, vips=[vip])
                sampler.start(interval=0.02)
            if c.kind == "proxy":
                router = ChangePoller(lambda: c.routing(lab), 0.05, name=f"{c.name}-routing")
                router.start()
            client = ClientRun(
                lab, writes=[("rw", c.rw_endpoint(lab))], interval=self.s.interval,
                timeout=self.s.timeout, app_models=self.s.app_models,
            )  # fmt: skip
            client.start()
            time.sleep(self.s.baseline)
            for scenario in self.s.scenarios():
                time.sleep(self._pause())
                try:
                    record = run_rw_event(
                        lab, c, scenario, client, sampler=sampler, router=router,
                        timing=self.s.timing(), log=self.log,
                    )  # fmt: skip
                except ScenarioError as exc:
                    self.log(f"  {scenario} FAILED: {exc}")
                    record = {"contender": c.name, "scenario": scenario, "error": str(exc)}
                    self._recover(c)
                record["round"] = rnd + 1
                record["jitter_s"] = round(self._last_pause, 3)
                record["id"] = len(self.results["events"]) + 1
                self.results["events"].append(record)
                time.sleep(self.s.baseline)
        finally:
            if client is not None:
                client.stop()
            if router is not None:
                router.stop()
            if sampler is not None:
                sampler.close()
            try:
                c.stop(lab)
            except ContenderError as exc:
                self.results["errors"].append(f"{c.name} stop: {exc}")
                self.log(f"  WARNING: {exc}")

    def _pause(self) -> float:
        self._last_pause = self.rng.uniform(0.0, self.s.jitter) if self.s.jitter > 0 else 0.0
        return self._last_pause

    def _patroni_pids(self) -> dict[str, list[int]]:
        found = {}
        for node in self.layout.node_names():
            pid = self.lab.pid(node, "patroni")
            if pid is not None:
                found[node] = [pid]
        return found

    def _footprint(self, c: Contender | None) -> None:
        """Idle CPU and RSS of the contender and, in the same window, of each node's Patroni
        (whose REST API every contender's health checks keep busy)."""
        groups = {} if c is None else c.processes(self.lab)
        patroni = self._patroni_pids()
        both = {**{f"contender:{h}": p for h, p in groups.items()},
                **{f"patroni:{h}": p for h, p in patroni.items()}}  # fmt: skip
        measured = footprint.measure(both, self.s.footprint_window)
        name = "none" if c is None else c.name
        self.results["patroni_load"][name] = {
            h: measured[f"patroni:{h}"]["cpu_pct"] for h in patroni
        }
        if c is not None:
            self.results["footprint"][name] = {h: measured[f"contender:{h}"] for h in groups}
            self.log(f"  idle footprint: {_footprint_line(self.results['footprint'][name])}")
        load = self.results["patroni_load"][name]
        self.log(f"  Patroni CPU meanwhile: {', '.join(f'{h} {v:.2f}%' for h, v in load.items())}")

    def _recover(self, c: Contender) -> None:
        """After a failed event: heal the lab and wait for the contender once more."""
        try:
            self.lab.reset(timeout=120)
            wait_rw_ready(self.lab, c)
        except (LabError, ScenarioError) as exc:
            raise SuiteError(f"the lab did not recover after a failed event: {exc}") from exc

    # -- RO --------------------------------------------------------------------------

    def _ro_phase(self) -> None:
        lab = self.lab
        names = ["haproxy"] + (["pgvip-ro"] if self.s.pgvip_ro else [])
        contenders = make_all(names)
        ro: dict[str, Any] = {"contenders": {}, "pgbench": [], "balance": {}, "events": []}
        self.results["ro"] = ro
        lab.wait_ready(timeout=90, progress=lambda m: None)
        self.log("RO phase: " + ", ".join(names))
        available: list[Contender] = []
        started: list[Contender] = []
        try:
            for c in contenders:
                c.start(lab)
                started.append(c)
                info: dict[str, Any] = {"description": c.describe(lab).as_dict()}
                try:
                    wait_rw_ready(lab, c)
                    wait_ro_ready(lab, c, timeout=30)
                    info["available"] = True
                    available.append(c)
                except ScenarioError as exc:
                    info["available"] = False
                    info["reason"] = str(exc)
                    self.log(f"  {c.name}: RO side unavailable: {exc}")
                ro["contenders"][c.name] = info
            for c in [c for c in started if c not in available]:
                c.stop(lab)
                started.remove(c)
            leader = lab.leader()
            if leader is None:
                raise SuiteError("no leader for the RO phase")
            init_pgbench(lab, leader, self.s.pgbench_scale, self.log)
            reps = replicas(lab, leader)
            ro["replicas"] = reps
            targets: list[tuple[str, list[Endpoint], Contender | None]] = [
                ("direct", [Endpoint(str(self.layout.node_ip(n)), PG_PORT) for n in reps], None)
            ]
            for c in available:
                ep = c.ro_endpoint(lab)
                assert ep is not None
                targets.append((c.name, [ep], c))
            for rnd in range(self.s.pgbench_rounds):
                shift = rnd % len(targets)
                for name, eps, owner in targets[shift:] + targets[:shift]:
                    meter = footprint.cpu_during(_all_pids(owner, lab)) if owner else None
                    result = run_pgbench(
                        lab, eps, clients=self.s.pgbench_clients, seconds=self.s.pgbench_seconds
                    )
                    result.update({"target": name, "round": rnd + 1,
                                   "endpoints": [str(e) for e in eps]})  # fmt: skip
                    if meter is not None:
                        result["contender_cpu_pct"] = meter.stop()
                    ro["pgbench"].append(result)
                    self.log(f"  pgbench -S -c {self.s.pgbench_clients} {name}: "
                             f"{result['tps']:.0f} tps")  # fmt: skip
            for c in available:
                ep = c.ro_endpoint(lab)
                assert ep is not None
                bal = measure_balance(lab, ep, self.s.balance_connects)
                ro["balance"][c.name] = bal
                self.log(f"  balance {c.name}: {bal['counts']} errors {bal['errors']}")
            self.save()
            if available and (self.s.replica_restarts + self.s.replica_kills
                              + self.s.replica_gone + self.s.replica_drains > 0):  # fmt: skip
                self._replica_restarts(available, ro)
        except (ThroughputError, ScenarioError) as exc:
            self.results["errors"].append(f"RO phase: {exc}")
            self.log(f"  RO phase stopped: {exc}")
        finally:
            for c in started:
                try:
                    c.stop(lab)
                except ContenderError as exc:
                    self.results["errors"].append(f"{c.name} stop: {exc}")

    def _replica_restarts(self, available: list[Contender], ro: dict[str, Any]) -> None:
        lab = self.lab
        with ClientRun(
            lab, reads=[(c.name, _ro(c, lab)) for c in available], leader=False,
            interval=self.s.interval, timeout=self.s.timeout, read_app=bool(self.s.app_models),
        ) as client:  # fmt: skip
            time.sleep(self.s.baseline)
            ways = (["stop"] * self.s.replica_restarts + ["kill-postgres"] * self.s.replica_kills
                    + ["gone"] * self.s.replica_gone)  # fmt: skip
            for k, how in enumerate(ways):
                leader = lab.leader()
                reps = replicas(lab, leader)
                if not reps:
                    raise ScenarioError("no streaming replica to take away")
                node = reps[k % len(reps)]
                time.sleep(self._pause())
                try:
                    record = run_replica_restart(
                        lab, available, client, node, how=how, timing=self.s.timing(),
                        log=self.log,
                    )  # fmt: skip
                except ScenarioError as exc:
                    self.log(f"  {WAYS[how]} FAILED: {exc}")
                    record = {"scenario": WAYS[how], "detail": node, "error": str(exc)}
                    lab.reset(timeout=120)
                record["id"] = k + 1
                record["jitter_s"] = round(self._last_pause, 3)
                ro["events"].append(record)
                time.sleep(self.s.baseline)
            for k in range(self.s.replica_drains):
                reps = replicas(lab, lab.leader())
                if not reps:
                    raise ScenarioError("no streaming replica to drain")
                node = reps[k % len(reps)]
                time.sleep(self._pause())
                try:
                    record = run_replica_drain(
                        lab, available, client, node, timing=self.s.timing(), log=self.log
                    )
                except ScenarioError as exc:
                    self.log(f"  replica-drain FAILED: {exc}")
                    record = {"scenario": "replica-drain", "detail": node, "error": str(exc)}
                    with contextlib.suppress(LabError):
                        lab.set_tag(node, "noloadbalance", False)
                record["id"] = len(ways) + k + 1
                ro["events"].append(record)
                time.sleep(self.s.baseline)


def _ro(c: Contender, lab: Lab) -> Endpoint:
    ep = c.ro_endpoint(lab)
    if ep is None:
        raise SuiteError(f"{c.name} has no RO endpoint")
    return ep


def _all_pids(c: Contender, lab: Lab) -> list[int]:
    return [pid for pids in c.processes(lab).values() for pid in pids]


def _footprint_line(fp: dict[str, dict[str, float]]) -> str:
    return "; ".join(
        f"{host} {v['cpu_pct']:.2f}% CPU {v['rss_mib']:.0f} MiB" for host, v in fp.items()
    )
