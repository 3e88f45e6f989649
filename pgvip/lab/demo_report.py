"""The demo's report, pure: one timeline row per probe sample, each scenario's measured gaps
and holder counts, and the summary table `pgvip lab demo` ends with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pgvip.lab import samples as probe_samples

BASELINE = 1.5  # seconds of samples before a scenario that say whether a path worked


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
