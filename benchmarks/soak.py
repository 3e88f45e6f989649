"""The soak (issue 14): many switchovers, kills, partitions and etcd outages in one lab, one
after another, in a seeded random order; what every event cost the clients, whether the RW
VIP was ever on two nodes (address level) or answered by two MACs (ARP level), and each
pgvip's RSS and open files at the start and the end.

`python -m benchmarks.soak` brings a lab of its own up (prefix pgvs, 10.20.39.0/24) and down
again, prints one line per event and a summary, and writes `soak-<UTC time>.json` (the
timeline goes to a log file beside it). Each event is a demo scenario (pgvip.lab.scenarios,
pgvip.lab.fault_matrix), measured by the demo's probe and 20 ms VIP sampler. A benchmark,
not a test: CI never runs it. The defaults take about 20 minutes. Every --rss-every seconds
each pgvip's RSS is sampled; the JSON has that timeline and the growth summed per kind of
event (from the sample before an event starts to the one before the next starts).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.recorder import REPO_ROOT

EVENTS = {  # option name -> scenario
    "switchovers": "switchover",
    "kills": "kill-leader",
    "partitions": "leader-link-down",
    "etcd_outages": "etcd-outage-failsafe",
}


def footprint(lab: Any) -> dict[str, dict[str, int]]:
    """Per node: pgvip's PID, RSS (KiB) and open file descriptors, from /proc."""
    out: dict[str, dict[str, int]] = {}
    for node in lab.layout.node_names():
        pid = lab.pid(node, "pgvip")
        if pid is None:
            continue
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        out[node] = {"pid": pid, "rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    return out


_STALL_FIELD = re.compile(r"(late_s|stalls_since_last_warning)\W{1,3}([0-9.]+)")


def loop_stalls(lab: Any) -> dict[str, dict[str, float]]:
    """Per node, from its pgvip log (appended across restarts): the event-loop stalls pgvip
    reported (warnings plus the repeats each one counts) and the longest warned one."""
    out: dict[str, dict[str, float]] = {}
    for node in lab.layout.node_names():
        path = lab.log_path(node, "pgvip")
        count, worst = 0, 0.0
        text = path.read_text(errors="replace") if path.exists() else ""
        for line in text.splitlines():
            if "event loop stalled" not in line:
                continue
            fields = dict(_STALL_FIELD.findall(line))
            count += 1 + int(float(fields.get("stalls_since_last_warning", 0)))
            worst = max(worst, float(fields.get("late_s", 0.0)))
        out[node] = {"stalls": count, "worst_warned_s": worst}
    return out


class FootprintTimeline:
    """Every `interval` seconds in a thread: each pgvip's RSS (KiB), with the monotonic
    time, so growth can be laid against the events' `t_event` (which kind costs memory)."""

    def __init__(self, lab: Any, interval: float) -> None:
        self.lab, self.interval = lab, interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                fp = footprint(self.lab)
            except OSError:  # a pgvip exited between the PID and /proc
                continue
            self.samples.append(
                {"t": round(time.monotonic(), 3), **{n: v["rss_kib"] for n, v in fp.items()}}
            )

    def __enter__(self) -> FootprintTimeline:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


def growth_by_event(
    docs: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Per scenario and node: the RSS growth (KiB) summed over that scenario's events, each
    from the last sample before it started to the last sample before the next one did."""
    if not samples:
        return {}
    starts = [d["t_event"] for d in docs]

    def at(t: float) -> dict[str, Any] | None:
        before = [s for s in samples if s["t"] <= t]
        return before[-1] if before else None

    out: dict[str, dict[str, int]] = {}
    for i, doc in enumerate(docs):
        start = at(starts[i])
        end = at(starts[i + 1]) if i + 1 < len(docs) else samples[-1]
        if start is None or end is None:
            continue
        per = out.setdefault(doc["name"], {})
        for node, rss in end.items():
            if node != "t" and node in start:
                per[node] = per.get(node, 0) + rss - start[node]
    return out


def schedule(counts: dict[str, int], seed: int) -> list[str]:
    events = [EVENTS[key] for key, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(events)
    return events


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario: events, failed ones, two-holder events, and the gaps clients saw."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["name"] for r in results):
        rs = [r for r in results if r["name"] == name]
        gaps = [r["rw_gap"] or 0.0 for r in rs if r["worked"].get("rw")]
        extra = [(r["app_rw_gap"] or 0.0) - (r["app_leader_gap"] or 0.0) for r in rs
                 if r["worked"].get("app_rw") and r["worked"].get("app_leader")]  # fmt: skip
        reads = [(r["ro_failures"] or {}).get("count", 0) for r in rs]
        counts = [r.get("holders") or {} for r in rs]
        out[name] = {
            "events": len(rs),
            "not_ok": sum(1 for r in rs if not r["ok"]),
            "two_rw_holders": sum(1 for r in rs if r["max_rw_holders"] > 1),
            "write_gap_p50": statistics.median(gaps) if gaps else None,
            "write_gap_max": max(gaps) if gaps else None,
            "app_extra_p50": statistics.median(extra) if extra else None,
            "app_extra_max": max(extra) if extra else None,
            "failed_reads_total": sum(reads),
            "failed_reads_max": max(reads, default=0),
            # 20 ms samples with the RW VIP on two nodes / answered by two MACs (ARP).
            "rw_dual_samples_addr": sum(c.get("rw_dual_samples", 0) for c in counts),
            "rw_dual_samples_arp": sum(c.get("rw_arp_dual_samples", 0) for c in counts),
            "ro_dual_samples_addr": sum(c.get("ro_dual_samples", 0) for c in counts),
            "ro_dual_samples_arp": sum(c.get("ro_arp_dual_samples", 0) for c in counts),
            "arp_samples": sum(c.get("arp_samples", 0) for c in counts),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--switchovers", type=int, default=50)
    parser.add_argument("--kills", type=int, default=10, help="kill -9 of the leader")
    parser.add_argument("--partitions", type=int, default=5, help="the leader cut off, 8 s")
    parser.add_argument("--etcd-outages", type=int, default=5, help="etcd down 25 s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rss-every",
        type=float,
        default=5.0,
        help="seconds between RSS samples of every pgvip (0: start and end only)",
    )
    parser.add_argument("--prefix", default="pgvs")
    parser.add_argument("--subnet", default="10.20.39.0/24")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    from pgvip.lab.cluster import Lab
    from pgvip.lab.demo import run_demo
    from pgvip.lab.demo_report import ScenarioResult
    from pgvip.lab.fault_matrix import ALL_RUNNERS, record
    from pgvip.lab.layout import LabLayout

    counts = {key: getattr(args, key) for key in EVENTS}
    events = schedule(counts, args.seed)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    log_path = out_dir / f"soak-{stamp}.log"
    lab = Lab(LabLayout.create(prefix=args.prefix, subnet=args.subnet, nodes=3), pgvip=True)
    results: list[ScenarioResult] = []
    started = time.monotonic()
    before = after = {}
    stalls: dict[str, dict[str, float]] = {}
    try:
        lab.up(timeout=120, progress=lambda m: print(f"lab: {m}", flush=True))
        time.sleep(5.0)  # past start-up: RSS after the first polls, not during import
        before = footprint(lab)
        print(f"{len(events)} events: {counts}; pgvip at start: {before}", flush=True)
        with open(log_path, "w") as log, FootprintTimeline(lab, args.rss_every) as timeline:
            code = run_demo(lab, out=log, scenarios=events, runners=ALL_RUNNERS, record=results)
        after = footprint(lab)
        stalls = loop_stalls(lab)
    finally:
        lab.down()
    docs = record(results)
    growth = {n: after[n]["rss_kib"] - before[n]["rss_kib"] for n in after if n in before
              and after[n]["pid"] == before[n]["pid"]}  # fmt: skip
    doc = {
        "schema": 1,
        "counts": counts,
        "seed": args.seed,
        "duration_s": round(time.monotonic() - started, 1),
        "pgvip_start": before,
        "pgvip_end": after,
        "rss_growth_kib": growth,
        "rss_growth_kib_by_event": growth_by_event(docs, timeline.samples),
        "loop_stalls": stalls,
        "summary": summarize(docs),
        "events": docs,
        "rss_timeline": timeline.samples,
    }
    path = out_dir / f"soak-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    for name, s in doc["summary"].items():
        print(f"{name}: {s}")
    print(f"RSS growth (KiB) per node: {growth}; fds {before} -> {after}")
    print(f"RSS growth (KiB) by event kind: {doc['rss_growth_kib_by_event']}")
    print(f"event-loop stalls reported by pgvip per node: {stalls}")
    print(f"results: {path}; timeline: {log_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
