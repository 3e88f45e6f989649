"""`pgvip lab demo`: break a running lab on purpose and show, every 100 ms, what a client sees.

The probe runs in the client namespace and the VIP sampler watches the nodes; each scenario
(switchover, kill -9 of the leader, a replica restart) ends with its measured gaps in a table.
A timeline row is stamped with the time its sample started and printed once its slowest attempt
ends, so during an outage rows arrive up to the probe's 1 s timeout late, but in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

from pgvip.lab import samples as probe_samples
from pgvip.lab.errors import LabError
from pgvip.lab.layout import LabLayout
from pgvip.lab.sampler import VipSampler

SCENARIOS = ("switchover", "kill-leader", "replica-restart")
ROW_INTERVAL = 0.1
BASELINE = 1.5  # seconds of samples before a scenario that say whether a path worked
SETTLE = 2.0  # seconds of steady timeline after each recovery
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


# -- pure parts: rows, windows, the summary ------------------------------------


def holder_text(nodes: Sequence[str] | None) -> str:
    """'-' for nobody, 'p2', or 'p1+p2!' when two nodes hold a VIP at once."""
    if not nodes:
        return "-"
    return "+".join(nodes) + ("!" if len(nodes) > 1 else "")


def outcome_text(sample: Mapping[str, Any], target: str) -> str:
    ok = sample.get(f"{target}_ok")
    if ok is None:
        return "-"
    if ok:
        return f"ok {sample.get(f'{target}_node') or sample.get(f'{target}_server') or ''}".strip()
    err = str(sample.get(f"{target}_err") or "error")
    return f"FAIL {err.split(':', 1)[0]}"


def format_row(
    rel: float,
    rw_holders: Sequence[str] | None,
    ro_holders: Sequence[str] | None,
    sample: Mapping[str, Any],
) -> str:
    """One timeline line: time, VIP holders, Patroni's leader, the write and the read."""
    leader = sample.get("leader") or "-"
    direct = sample.get("leader_ok")
    # Whether a write straight to that leader worked: Patroni's own availability.
    leader_text = leader if direct is None else f"{leader}:{'ok' if direct else 'FAIL'}"
    return (
        f"{rel:7.1f}s  RW {holder_text(rw_holders):<6} RO {holder_text(ro_holders):<6} "
        f"leader {leader_text:<8} write {outcome_text(sample, 'rw'):<19} "
        f"read {outcome_text(sample, 'ro')}"
    )


@dataclass
class ScenarioResult:
    name: str
    t_event: float | None = None  # monotonic time the fault was injected
    t_end: float | None = None  # monotonic time the lab was ready again (+ settle)
    recovered: bool = False
    detail: str = ""  # what happened, e.g. "p1 -> p2"
    error: str | None = None
    rw_gap: float | None = None
    ro_gap: float | None = None
    leader_gap: float | None = None
    max_rw_holders: int = 0
    # Per path: was it working before the fault ("n/a" in the table if not).
    worked: dict[str, bool] = dataclasses.field(default_factory=dict)
    recovered_paths: dict[str, bool] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.recovered
            and all(self.recovered_paths.get(p, True) for p, w in self.worked.items() if w)
        )


def worked_before(samples: Iterable[Mapping[str, Any]], target: str, t: float) -> bool:
    """Did `target` work just before `t`: the last sample ok and most of the baseline ok?"""
    key = f"{target}_ok"
    window = sorted(
        (s for s in samples if t - BASELINE <= float(s["t"]) < t and s.get(key) is not None),
        key=lambda s: float(s["t"]),
    )
    if not window or not window[-1][key]:
        return False
    return sum(1 for s in window if s[key]) * 2 >= len(window)


def measure(
    result: ScenarioResult,
    samples: Sequence[Mapping[str, Any]],
    rw_timeline: Sequence[tuple[float, Sequence[str]]],
) -> None:
    """Fill in the gaps and holder counts of a finished scenario from the recorded data."""
    if result.t_event is None or result.t_end is None:
        return
    t0, t1 = result.t_event, result.t_end
    for target in probe_samples.TARGETS:
        result.worked[target] = worked_before(samples, target, t0)
        found = probe_samples.gaps(samples, target, since=t0, until=t1)
        # An outage that started before the fault belongs to an earlier scenario.
        found = [g for g in found if g.first_fail >= t0]
        result.recovered_paths[target] = all(g.recovered for g in found)
        gap = probe_samples.longest_gap(found)
        setattr(result, f"{target}_gap", gap)
    before = [h for t, h in rw_timeline if t <= t0]
    during = [h for t, h in rw_timeline if t0 < t <= t1]
    counts = [len(h) for h in ([before[-1]] if before else []) + during]
    result.max_rw_holders = max(counts, default=0)


def _gap_text(result: ScenarioResult, target: str) -> str:
    if not result.worked.get(target):
        return "n/a"
    if not result.recovered_paths.get(target, True):
        return "no recovery"
    gap = getattr(result, f"{target}_gap")
    return "none" if not gap else f"{gap:.2f} s"


def summary_table(results: Sequence[ScenarioResult]) -> str:
    header = (
        "scenario",
        "what",
        "write gap (RW VIP)",
        "read gap (RO VIP)",
        "Patroni gap (leader)",
        "max RW holders",
        "result",
    )
    rows = [header]
    for r in results:
        verdict = "recovered" if r.ok else f"FAILED{': ' + r.error if r.error else ''}"
        rows.append(
            (
                r.name,
                r.detail or "-",
                _gap_text(r, "rw"),
                _gap_text(r, "ro"),
                _gap_text(r, "leader"),
                str(r.max_rw_holders),
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows[:]) for i in range(len(header) - 1)]
    lines = []
    for i, row in enumerate(rows):
        cells = [cell.ljust(widths[j]) for j, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
    notes = [
        "gap: from the last success before to the first success after (100 ms samples);",
        "Patroni gap: writes straight to the node Patroni calls leader, i.e. Patroni's own;",
        "n/a: that path did not work before the scenario (no pgvip, or no RO VIP configured).",
    ]
    return "\n".join(lines + [""] + notes)


# -- I/O -------------------------------------------------------------------------


class _Timeline:
    """Reads the probe's lines and prints one row per sample, with scenario events merged in."""

    def __init__(
        self,
        stream: IO[str],
        out: TextIO,
        sampler: VipSampler,
        layout: LabLayout,
        t0: float,
        raw: IO[str] | None = None,
    ) -> None:
        self.stream = stream
        self.raw = raw
        self.out = out
        self.sampler = sampler
        self.layout = layout
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self._events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-timeline", daemon=True)
        self._out_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def wait_first(self, timeout: float) -> bool:
        return self._first.wait(timeout)

    def event(self, text: str, t: float | None = None) -> None:
        """Print `text` in the timeline where time `t` (now by default) falls."""
        with self._lock:
            self._events.append((time.monotonic() if t is None else t, text))

    def write(self, text: str) -> None:
        with self._out_lock:
            self.out.write(text + "\n")
            self.out.flush()

    def latest_t(self) -> float | None:
        with self._lock:
            return float(self.samples[-1]["t"]) if self.samples else None

    def wait_until(self, t: float, timeout: float) -> None:
        """Wait until the probe has reported samples up to time `t` (lines lag up to 1 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest_t()
            if latest is not None and latest >= t:
                return
            time.sleep(0.05)

    def _flush_events(self, until: float | None) -> None:
        with self._lock:
            due = sorted(e for e in self._events if until is None or e[0] <= until)
            self._events = [e for e in self._events if not (until is None or e[0] <= until)]
        for t, text in due:
            self.write(f"{t - self.t0:7.1f}s  >>> {text}")

    def _run(self) -> None:
        rw, ro = self.layout.rw_vip, self.layout.ro_vip
        for raw in self.stream:
            sample = probe_samples.parse_line(raw)
            if sample is None:
                continue
            if self.raw is not None:
                self.raw.write(raw)
            t = float(sample["t"])
            with self._lock:
                self.samples.append(sample)
            self._first.set()
            self._flush_events(t)
            row = format_row(
                t - self.t0, self.sampler.holders_at(rw, t), self.sampler.holders_at(ro, t), sample
            )
            self.write(row)
        self._flush_events(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self._flush_events(None)


def _probe_argv(layout: LabLayout, python: str) -> list[str]:
    return [
        "ip", "netns", "exec", layout.client_ns,
        python, "-m", "pgvip.lab.probe",
        "--subnet", str(layout.subnet), "--nodes", str(layout.nodes),
        "--leader", "--interval", str(ROW_INTERVAL), "--timeout", "1.0",
    ]  # fmt: skip


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


def _scenario_switchover(lab: LabLike, tl: _Timeline, result: ScenarioResult) -> None:
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


def _scenario_kill_leader(lab: LabLike, tl: _Timeline, result: ScenarioResult) -> None:
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


def _scenario_replica_restart(lab: LabLike, tl: _Timeline, result: ScenarioResult) -> None:
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


_RUNNERS: dict[str, Callable[[LabLike, _Timeline, ScenarioResult], None]] = {
    "switchover": _scenario_switchover,
    "kill-leader": _scenario_kill_leader,
    "replica-restart": _scenario_replica_restart,
}


def run_demo(
    lab: LabLike,
    *,
    out: TextIO = sys.stdout,
    scenarios: Sequence[str] = SCENARIOS,
) -> int:
    """Run the scenarios on a ready lab, printing the timeline and a summary table.

    Returns 0 if every scenario recovered (every path that worked before works again),
    1 otherwise. Leaves the lab running and, as far as it can, healthy.
    """
    unknown = [s for s in scenarios if s not in _RUNNERS]
    if unknown:
        raise DemoError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    layout = lab.layout
    python = str(Path(sys.executable).parent / "python")
    log_file = lab.log_path("client", "probe")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    samples_file = log_file.with_name("client-probe.jsonl")
    results = [ScenarioResult(name) for name in scenarios]
    t0 = time.monotonic()

    out.write(
        f"pgvip lab demo: lab {layout.prefix!r}, RW VIP {layout.rw_vip}, RO VIP "
        f"{layout.ro_vip}, {'with' if lab.pgvip else 'WITHOUT'} pgvip\n"
        f"probe log: {log_file}; its samples: {samples_file}\n"
        "columns: time, RW/RO VIP holder (sampled in the nodes), Patroni's leader (and a "
        "write straight to it), a write through the RW VIP, a read through the RO VIP "
        "('p1+p2!' = two holders)\n\n"
    )
    out.flush()

    with (
        VipSampler(layout) as sampler,
        open(log_file, "ab") as log,
        open(samples_file, "w") as raw,
    ):
        sampler.start(interval=0.02)
        proc = subprocess.Popen(
            _probe_argv(layout, python),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        assert proc.stdout is not None
        tl = _Timeline(proc.stdout, out, sampler, layout, t0, raw)
        tl.start()
        try:
            if not tl.wait_first(15.0):
                raise DemoError(
                    f"the probe printed nothing in 15 s (exit status {proc.poll()}); see {log_file}"
                )
            time.sleep(BASELINE + 0.5)
            for result in results:
                tl.event(f"=== scenario {result.name} ===")
                try:
                    _RUNNERS[result.name](lab, tl, result)
                    result.recovered = True
                except Exception as exc:  # reported in the table; the next scenario still runs
                    result.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    tl.event(f"scenario {result.name} FAILED: {result.error}")
                    with contextlib.suppress(Exception):
                        lab.reset(timeout=RECOVER_TIMEOUT)
                if result.t_event is None:
                    continue
                time.sleep(SETTLE)
                result.t_end = time.monotonic()
                tl.wait_until(result.t_end, timeout=5.0)
        finally:
            # The probe should still be running here; if it is not, its samples stop early.
            probe_exit = proc.poll()
            _stop_probe(proc)
            tl.join(timeout=5.0)
            sampler.stop()
        if probe_exit is not None:
            for result in results:
                result.error = result.error or (
                    f"the probe exited early (status {probe_exit}); see {log_file}"
                )

        rw_timeline = [(c.t, c.holders) for c in sampler.timeline(layout.rw_vip)]
        for result in results:
            measure(result, tl.samples, rw_timeline)

    out.write("\n" + summary_table(results) + "\n")
    doubles = [e for e in sampler.double_holder_events() if e.ip == layout.rw_vip]
    if doubles:
        out.write(
            f"WARNING: the RW VIP was held by two nodes {len(doubles)} time(s): "
            + "; ".join(f"{'+'.join(e.nodes)} at {e.start - t0:.1f}s" for e in doubles)
            + "\n"
        )
    out.flush()
    return 0 if all(r.ok for r in results) else 1


def _stop_probe(proc: subprocess.Popen[str]) -> None:
    # By PID (and its session, which `ip netns exec` execs into): never by name.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
