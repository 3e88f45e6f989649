"""The demo's report, pure: one timeline row per probe sample, each scenario's measured gaps,
failed attempts and holder counts, the line printed as a scenario ends, and the summary table
`pgvip lab demo` ends with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pgvip.lab import samples as probe_samples

BASELINE = 1.5  # seconds of samples before a scenario that say whether a path worked
PATH_NAMES = {"rw": "write", "ro": "read", "leader": "Patroni"}


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


@dataclass(frozen=True)
class HolderCounts:
    """Who held each VIP at each 20 ms sample of one scenario, at both levels."""

    rw_dual_samples: int  # address level: sweeps that saw the RW VIP on two nodes
    ro_dual_samples: int
    arp_samples: int  # ARP slots asked in the scenario (0: ARP level not sampled)
    rw_arp_dual_samples: int  # slots where two MACs answered who-has for the RW VIP
    ro_arp_dual_samples: int
    max_rw_arp_holders: int  # the most hosts (nodes or not) that answered in one slot
    rw_arp_unanswered: int  # slots where nobody answered for the RW VIP


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
    # Every failed attempt from the fault to the end, also those between successes (a gap
    # resets on any success; these do not): count, kinds and first-to-last window.
    rw_failures: probe_samples.Failures | None = None
    ro_failures: probe_samples.Failures | None = None
    leader_failures: probe_samples.Failures | None = None
    # The application-model writer (probe --app) and its twin straight to Patroni's leader.
    app_rw_gap: float | None = None
    app_leader_gap: float | None = None
    app_rw_failures: probe_samples.Failures | None = None
    app_leader_failures: probe_samples.Failures | None = None
    max_rw_holders: int = 0
    # Dual-holder samples from the fault to the end: address level (20 ms sweeps of the
    # nodes' addresses) and ARP level (20 ms who-has from the client: two MACs answered).
    holders: HolderCounts | None = None
    # Per path: was it working before the fault ("n/a" in the table if not).
    worked: dict[str, bool] = dataclasses.field(default_factory=dict)
    recovered_paths: dict[str, bool] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        paths = [p for p, w in self.worked.items() if w]
        if not self.recovered_paths.get("app_leader", True):
            # The application-model client did not recover even straight to the leader: the
            # client (e.g. psycopg cancelling a query on a host it cannot reach), not the VIP.
            paths = [p for p in paths if p not in ("app_rw", "app_leader")]
        return (
            self.error is None
            and self.recovered
            and all(self.recovered_paths.get(p, True) for p in paths)
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


def measure_paths(result: ScenarioResult, samples: Sequence[Mapping[str, Any]]) -> None:
    """Fill in, per path, whether it worked, its gaps and its failed attempts from the fault to
    the end of a finished scenario: what the line printed as the scenario ends shows."""
    if result.t_event is None or result.t_end is None:
        return
    t0, t1 = result.t_event, result.t_end
    for target in probe_samples.TARGETS + probe_samples.APP_TARGETS:
        result.worked[target] = worked_before(samples, target, t0)
        found = probe_samples.gaps(samples, target, since=t0, until=t1)
        # An outage that started before the fault belongs to an earlier scenario.
        found = [g for g in found if g.first_fail >= t0]
        result.recovered_paths[target] = all(g.recovered for g in found)
        gap = probe_samples.longest_gap(found)
        setattr(result, f"{target}_gap", gap)
        # The same span as the gaps: from the fault to the end.
        setattr(result, f"{target}_failures", probe_samples.failures(samples, target, t0, t1))


def measure(
    result: ScenarioResult,
    samples: Sequence[Mapping[str, Any]],
    rw_timeline: Sequence[tuple[float, Sequence[str]]],
) -> None:
    """Fill in the gaps, failed attempts and holder counts of a finished scenario."""
    if result.t_event is None or result.t_end is None:
        return
    measure_paths(result, samples)
    t0, t1 = result.t_event, result.t_end
    before = [h for t, h in rw_timeline if t <= t0]
    during = [h for t, h in rw_timeline if t0 < t <= t1]
    counts = [len(h) for h in ([before[-1]] if before else []) + during]
    result.max_rw_holders = max(counts, default=0)


def dual_text(result: ScenarioResult, vip: str = "rw") -> str:
    """'0 / 0': dual-holder samples at the address and the ARP level ('-' if not sampled)."""
    h = result.holders
    if h is None:
        return "-"
    arp = getattr(h, f"{vip}_arp_dual_samples") if h.arp_samples else "-"
    return f"{getattr(h, f'{vip}_dual_samples')} / {arp}"


def fails_text(result: ScenarioResult, target: str) -> str:
    """'13: refused 12, timeout 1', '0' for none, 'n/a' if the path did not work before."""
    found = getattr(result, f"{target}_failures")
    if not result.worked.get(target) or found is None:
        return "n/a"
    return f"{found.count}: {found.kinds_text()}" if found.count else "0"


def fail_window_text(result: ScenarioResult, target: str) -> str:
    """First to last failed attempt, '1.50' (seconds); '-' for none, 'n/a' as fails_text.
    No ' s' unit in the cell: the table's gaps are the only 'N.NN s' cells."""
    found = getattr(result, f"{target}_failures")
    if not result.worked.get(target) or found is None:
        return "n/a"
    return f"{found.window:.2f}" if found.count else "-"


def step_line(result: ScenarioResult) -> str:
    """What each path saw from the fault to the end, printed in the timeline as a scenario
    ends: 'write gap 0.20 s, 13 failed over 1.50 s (refused 12, timeout 1); ...'."""
    parts = []
    for target in probe_samples.TARGETS:
        name = PATH_NAMES[target]
        found = getattr(result, f"{target}_failures")
        if not result.worked.get(target) or found is None:
            parts.append(f"{name} n/a")
        elif not found.count:
            parts.append(f"{name} gap {_gap_text(result, target)}, 0 failed")
        else:
            parts.append(
                f"{name} gap {_gap_text(result, target)}, {found.count} failed over "
                f"{found.window:.2f} s ({found.kinds_text()})"
            )
    if result.worked.get("app_rw"):
        found = result.app_rw_failures
        failed = f", {found.count} failed ({found.kinds_text()})" if found and found.count else ""
        parts.append(f"app writer gap {_gap_text(result, 'app_rw')}{failed}"
                     f", extra over its twin {_extra_text(result)}")  # fmt: skip
    return f"{result.name} done: " + "; ".join(parts)


def app_extra(result: ScenarioResult) -> float | None:
    """The gap the application-model writer paid through the RW VIP minus its twin's (straight
    to Patroni's leader) in the same scenario: what the VIP costs an application. None unless
    both worked before and recovered."""
    paths = ("app_rw", "app_leader")
    if not all(result.worked.get(p) and result.recovered_paths.get(p, True) for p in paths):
        return None
    return (result.app_rw_gap or 0.0) - (result.app_leader_gap or 0.0)


def _extra_text(result: ScenarioResult) -> str:
    extra = app_extra(result)
    return "n/a" if extra is None else f"{extra:+.2f} s"


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
        "write fails",
        "write fail window (s)",
        "read fails",
        "read fail window (s)",
        "Patroni fails",
        "Patroni fail window (s)",
        "app write gap",
        "app extra",
        "max RW holders",
        "RW dual samples addr / ARP",
        "result",
    )
    rows: list[tuple[str, ...]] = [header]
    for r in results:
        verdict = "recovered" if r.ok else f"FAILED{': ' + r.error if r.error else ''}"
        rows.append(
            (
                r.name,
                r.detail or "-",
                _gap_text(r, "rw"),
                _gap_text(r, "ro"),
                _gap_text(r, "leader"),
                *(
                    cell
                    for target in probe_samples.TARGETS
                    for cell in (fails_text(r, target), fail_window_text(r, target))
                ),
                _gap_text(r, "app_rw"),
                _extra_text(r),
                str(r.max_rw_holders),
                dual_text(r),
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
        "fails: every failed attempt from the fault to the end, by kind, also those between",
        "successes (which a gap does not see); fail window: from the first to the last of them;",
        "app: one connection that reconnects at once with a 1 s connect deadline, as an",
        "application holds one; app extra: its gap minus its twin's, which follows Patroni's",
        "leader directly (a lost SYN costs it the whole deadline, unlike the 100 ms samples);",
        "n/a: that path did not work before the scenario (no pgvip, or no RO VIP configured);",
        "dual samples: 20 ms samples with the RW VIP on two nodes (addr) or with two MACs",
        "answering the client's ARP who-has for it (ARP, hosts outside the cluster included).",
    ]
    return "\n".join(lines + [""] + notes)
