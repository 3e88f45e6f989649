"""PNG plots made from a run's JSON only: one switchover per contender on a timeline (writes
through it and to Patroni's leader, and who held the VIP or was routable), the attributable gap
of every event, and RO throughput. matplotlib is the benchmark-only extra `pgvip[bench]`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import contender_order, rw_events
from benchmarks.stats import percentile

NODE_COLOURS = {"p1": "#1f77b4", "p2": "#ff7f0e", "p3": "#2ca02c", "p4": "#9467bd", "p5": "#8c564b"}
OK, FAIL, READ_ONLY = "#2ca02c", "#d62728", "#ff7f0e"


class PlotError(RuntimeError):
    """matplotlib is missing or a plot cannot be made from the results."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a display
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotError(
            "matplotlib is missing: pip install 'pgvip[bench]' (or matplotlib>=3.7)"
        ) from exc
    return plt


def representative(events: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The event whose attributable gap is the median one (the lower of two middles)."""
    scored = [e for e in events if e.get("attributable") is not None]
    if not scored:
        return None
    target = percentile([e["attributable"] for e in scored], 50)
    return min(scored, key=lambda e: (abs(e["attributable"] - target), e["attributable"]))


def _lane(ax: Any, y: float, t: Sequence[float], col: Sequence[Any]) -> None:
    for value, colour in ((1, OK), ("read_only", READ_ONLY)):
        xs = [ti for ti, c in zip(t, col, strict=True) if c == value]
        ax.scatter(xs, [y] * len(xs), marker="|", s=60, color=colour, linewidths=0.8)
    xs = [ti for ti, c in zip(t, col, strict=True) if c not in (1, "read_only", None)]
    ax.scatter(xs, [y] * len(xs), marker="|", s=60, color=FAIL, linewidths=0.8)


def _holders(ax: Any, y: float, side: Mapping[str, Any], t_min: float, t_max: float) -> None:
    segs = side.get("segments", [])
    for i, (start, holders) in enumerate(segs):
        end = segs[i + 1][0] if i + 1 < len(segs) else t_max
        if not holders:
            colour, label = "#dddddd", ""
        elif len(holders) > 1:
            colour, label = "#d62728", "+".join(holders)
        else:
            colour, label = NODE_COLOURS.get(holders[0], "#555555"), holders[0]
        ax.broken_barh([(start, max(end - start, 0.01))], (y - 0.3, 0.6), color=colour)
        shown = max(start, t_min)
        if label and end - shown > 0.4:
            ax.text(shown + 0.05, y, label, va="center", fontsize=7, color="white")


def timeline(doc: Mapping[str, Any], path: Path) -> Path | None:
    plt = _pyplot()
    picks = []
    for name in contender_order(doc):
        event = representative(rw_events(doc, "switchover", name))
        if event is not None:
            picks.append((name, event))
    if not picks:
        return None
    fig, axes = plt.subplots(len(picks), 1, figsize=(11, 1.9 * len(picks) + 0.6), squeeze=False)
    t_hi = max(e["marks"]["end"] for _, e in picks)
    for ax, (name, e) in zip(axes[:, 0], picks, strict=True):
        s = e["samples"]
        t = [ms / 1000 for ms in s["t_ms"]]
        _lane(ax, 0, t, s["leader"])
        _lane(ax, 1, t, s["rw"])
        side = e.get("holders") or e.get("routing") or {}
        _holders(ax, 2, side, -1.0, e["marks"]["end"])
        ax.set_yticks([0, 1, 2])
        ax.set_yticklabels(
            [
                "write to Patroni's leader",
                f"write via {name}",
                "routable servers" if "routing" in e else "RW VIP holder",
            ],  # fmt: skip
            fontsize=8,
        )
        ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xlim(-1.0, t_hi)
        ax.set_ylim(-0.6, 2.6)
        ax.set_title(
            f"{name}: switchover {e['detail']} (event #{e.get('id')}), Patroni gap "
            f"{e['patroni']['gap']:.2f} s, via {name} {e['through']['gap']:.2f} s, "
            f"attributable {e['attributable']:+.2f} s",
            fontsize=9,
            loc="left",
        )
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel(
        "seconds since the switchover request (green: write ok, red: failed, orange: failed "
        "read-only)",
        fontsize=8,
    )
    fig.suptitle(
        f"One switchover per contender (its median attributable gap), run {doc.get('run_id')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gaps(doc: Mapping[str, Any], path: Path) -> Path | None:
    plt = _pyplot()
    names = contender_order(doc)
    scenarios = [s for s in ("switchover", "kill") if any(rw_events(doc, s, n) for n in names)]
    if not scenarios:
        return None
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        for i, name in enumerate(names):
            values = [e["attributable"] for e in rw_events(doc, scenario, name)
                      if e.get("attributable") is not None]  # fmt: skip
            xs = [i + (k % 5 - 2) * 0.05 for k in range(len(values))]
            ax.scatter(xs, values, s=18, alpha=0.8)
            if values:
                ax.hlines(percentile(values, 50), i - 0.25, i + 0.25, color="black")
        if scenario == "switchover":
            ax.axhline(0.25, color="#d62728", linewidth=0.8, linestyle=":")
            ax.text(len(names) - 0.5, 0.27, "0.25 s target", fontsize=7, ha="right",
                    color="#d62728")  # fmt: skip
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel("gap attributable to the contender (s)", fontsize=8)
        ax.set_title(f"{scenario}: every event (bar = median)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(doc: Mapping[str, Any], path: Path) -> Path | None:
    plt = _pyplot()
    runs = (doc.get("ro") or {}).get("pgbench", [])
    if not runs:
        return None
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r["target"], []).append(r["tps"])
    names = list(by)
    means = [percentile(v, 50) for v in by.values()]  # medians: one noisy run moves a mean
    base = means[names.index("direct")] if "direct" in names else None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.bar(
        range(len(names)), means, color=["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(names)]
    )
    for i, name in enumerate(names):
        ax.scatter([i] * len(by[name]), by[name], color="black", s=12, zorder=3)
        if base:
            ax.text(i, means[i] * 1.02, f"{means[i]:.0f} tps\n{means[i] / base:.2f}× direct",
                    ha="center", fontsize=8)  # fmt: skip
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_ylabel("tps (pgbench -S)")
    ax.set_ylim(0, max(max(v) for v in by.values()) * 1.25)
    s = doc.get("settings", {})
    ax.set_title(
        f"Read-only throughput, pgbench -S -c {s.get('pgbench_clients')} -T "
        f"{s.get('pgbench_seconds')} (bars: median, dots: runs)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_all(doc: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Every plot the results allow, as `<run_id>-<name>.png` in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = doc.get("run_id", "run")
    made = []
    for name, fn in (("timeline", timeline), ("gaps", gaps), ("throughput", throughput)):
        result = fn(doc, out_dir / f"{run}-{name}.png")
        if result is not None:
            made.append(result)
    return made
