"""`pgvip lab demo`: break a running lab on purpose and show, every 100 ms, what a client sees.

The probe runs in the client namespace and the VIP sampler watches the nodes; each scenario
(switchover, kill -9 of the leader, a replica restart) ends with a line of what each path saw
(its gap, and every failed attempt by kind with the first-to-last window), and the run with a
table of them. Beside the 100 ms samples, which start a new attempt every 100 ms (so a lost
SYN costs them nothing), the probe runs an application-model writer: one connection through
the RW VIP, reconnected at once with a 1 s connect deadline, and its twin that follows
Patroni's leader directly; the table shows the extra gap that writer pays over its twin.
A timeline row is stamped with the time its sample started and printed once its slowest attempt
ends, so during an outage rows arrive up to the probe's 1 s timeout late, but in order.
The scenarios are in pgvip.lab.scenarios, the rows and the table in pgvip.lab.demo_report.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

from pgvip.lab import samples as probe_samples
from pgvip.lab.arp_sampler import ArpSample, ArpSampler, ArpSamplerError, count_in
from pgvip.lab.demo_report import (
    BASELINE,
    HolderCounts,
    ScenarioResult,
    format_row,
    measure,
    measure_paths,
    step_line,
    summary_table,
)
from pgvip.lab.layout import LabLayout
from pgvip.lab.sampler import VipSampler
from pgvip.lab.scenarios import RECOVER_TIMEOUT, RUNNERS, SCENARIOS, DemoError, LabLike

ROW_INTERVAL = 0.1
SETTLE = 2.0  # seconds of steady timeline after each recovery


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

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.samples)

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
            if sample.get("client") == "app":
                continue  # the application-model writer: measured, not a timeline row
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
        "--leader", "--app", "--interval", str(ROW_INTERVAL), "--timeout", "1.0",
    ]  # fmt: skip


def run_demo(
    lab: LabLike,
    *,
    out: TextIO = sys.stdout,
    scenarios: Sequence[str] = SCENARIOS,
    runners: Mapping[str, Callable[..., None]] = RUNNERS,
    record: list[ScenarioResult] | None = None,
) -> int:
    """Run the scenarios on a ready lab, printing the timeline and a summary table.

    Returns 0 if every scenario recovered (every path that worked before works again),
    1 otherwise. Leaves the lab running and, as far as it can, healthy.
    """
    unknown = [s for s in scenarios if s not in runners]
    if unknown:
        raise DemoError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(runners)}"
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

    arp = ArpSampler(layout, interval=0.02)
    with (
        VipSampler(layout) as sampler,
        arp,
        open(log_file, "ab") as log,
        open(samples_file, "w") as raw,
    ):
        sampler.start(interval=0.02)
        try:
            arp.start()
        except ArpSamplerError as exc:  # the address level still runs; say so, once
            out.write(f"note: ARP level not sampled ({exc})\n")
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
                    runners[result.name](lab, tl, result)
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
                measure_paths(result, tl.snapshot())
                tl.event(step_line(result), t=result.t_end)
        finally:
            # The probe should still be running here; if it is not, its samples stop early.
            probe_exit = proc.poll()
            _stop_probe(proc)
            tl.join(timeout=5.0)
            sampler.stop()
            arp.stop()
        if probe_exit is not None:
            for result in results:
                result.error = result.error or (
                    f"the probe exited early (status {probe_exit}); see {log_file}"
                )

        rw_timeline = [(c.t, c.holders) for c in sampler.timeline(layout.rw_vip)]
        arp_samples = arp.snapshot()
        for result in results:
            measure(result, tl.samples, rw_timeline)
            result.holders = holder_counts(result, sampler, arp_samples, layout)

    if record is not None:
        record.extend(results)
    out.write("\n" + summary_table(results) + "\n")
    doubles = [e for e in sampler.double_holder_events() if e.ip == layout.rw_vip]
    if doubles:
        out.write(
            f"WARNING: the RW VIP was held by two nodes {len(doubles)} time(s): "
            + "; ".join(f"{'+'.join(e.nodes)} at {e.start - t0:.1f}s" for e in doubles)
            + "\n"
        )
    arp_doubles = [r.name for r in results if r.holders and r.holders.rw_arp_dual_samples]
    if arp_doubles:
        out.write(f"WARNING: two MACs answered ARP for the RW VIP in {', '.join(arp_doubles)}\n")
    out.flush()
    return 0 if all(r.ok for r in results) else 1


def holder_counts(
    result: ScenarioResult, sampler: VipSampler, arp: Sequence[ArpSample], layout: LabLayout
) -> HolderCounts | None:
    """Dual-holder samples of one finished scenario, at the address and the ARP level."""
    if result.t_event is None or result.t_end is None:
        return None
    t0, t1 = result.t_event, result.t_end
    asked, rw_dual, rw_none, rw_most = count_in(arp, layout.rw_vip, t0, t1)
    _, ro_dual, _, _ = count_in(arp, layout.ro_vip, t0, t1)
    return HolderCounts(
        rw_dual_samples=sampler.double_samples(layout.rw_vip, t0, t1),
        ro_dual_samples=sampler.double_samples(layout.ro_vip, t0, t1),
        arp_samples=asked,
        rw_arp_dual_samples=rw_dual,
        ro_arp_dual_samples=ro_dual,
        max_rw_arp_holders=rw_most,
        rw_arp_unanswered=rw_none,
    )


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
