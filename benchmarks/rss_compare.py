"""The daemons' snapshots of `benchmarks.rss_soak`, compared: live objects by type per
snapshot, and tracemalloc's top growth by traceback between the first and the last."""

from __future__ import annotations

import json
from pathlib import Path

HOSTS = ("a", "b", "c")


def last_snapshot(workdir: Path, host: str) -> int:
    return max((int(p.name.split(".")[1]) for p in (workdir / host).glob("snap.*.types")),
               default=0)  # fmt: skip


def compare_types(workdir: Path, top: int) -> None:
    """Live objects by type: the first snapshot, the last, and every one between."""
    for h in HOSTS:
        n = last_snapshot(workdir, h)
        docs = [json.loads((workdir / h / f"snap.{i}.types").read_text())["types"]
                for i in range(1, n + 1) if (workdir / h / f"snap.{i}.types").exists()]  # fmt: skip
        if len(docs) < 2:
            continue
        totals = [sum(d.values()) for d in docs]
        print(f"== {h}: live objects per snapshot {totals}")
        grow = sorted(docs[-1], key=lambda t: docs[0].get(t, 0) - docs[-1][t])[:top]
        for t in grow:
            series = [d.get(t, 0) for d in docs]
            if series[-1] > series[0]:
                print(f"    {t}: {series}")


def compare(workdir: Path, top: int) -> None:
    import tracemalloc

    for h in HOSTS:
        n = last_snapshot(workdir, h)
        first, last = workdir / h / "snap.1", workdir / h / f"snap.{n}"
        if not (first.exists() and last.exists()):
            print(f"{h}: no tracemalloc snapshots")
            continue
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        a = tracemalloc.Snapshot.load(str(first)).filter_traces(filters)
        b = tracemalloc.Snapshot.load(str(last)).filter_traces(filters)
        total = sum(s.size for s in b.statistics("filename")) - sum(
            s.size for s in a.statistics("filename"))  # fmt: skip
        print(f"== {h}: traced heap growth {total / 1024:.1f} KiB; top {top} by traceback")
        for stat in b.compare_to(a, "traceback")[:top]:
            print(f"+{stat.size_diff / 1024:.1f} KiB ({stat.count_diff:+d} blocks)")
            for line in stat.traceback.format()[-12:]:
                print("   ", line)
