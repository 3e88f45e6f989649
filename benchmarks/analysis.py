"""Pure analysis of one event's samples: how long each path was unavailable, what the errors
were, and who held (or was routed) the RW side over time. No I/O, so it is checked with
synthetic samples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgvip.lab.samples import failures

# A path counts as back only after this long of uninterrupted successes, so a path that
# alternates (HAProxy sending every other connection to the demoted primary) is still "down".
STABLE = 1.0


class AnalysisError(ValueError):
    """Samples cannot be analysed as asked (unknown path, empty window)."""


@dataclass(frozen=True)
class PathGap:
    """One path's outage around an event (seconds; times are monotonic).

    `gap`: from the last success before the first failure to the start of the first run of
    STABLE seconds of successes; 0.0 if nothing failed, None if it never came back stably.
    """

    path: str
    worked_before: bool
    gap: float | None
    first_fail: float | None = None
    recovered_at: float | None = None
    longest: float = 0.0  # the longest single run of failures (last ok -> next ok)
    failures: int = 0  # failed attempts up to the recovery
    later_failures: int = 0  # failed attempts after the recovery, within the window
    errors: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "worked_before": self.worked_before,
            "gap": _r(self.gap),
            "first_fail": self.first_fail,
            "recovered_at": self.recovered_at,
            "longest": _r(self.longest),
            "failures": self.failures,
            "later_failures": self.later_failures,
            "errors": dict(self.errors),
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def error_label(err: str | None) -> str:
    """'refused: connection refused ...' -> 'refused'."""
    if not err:
        return "error"
    return err.split(":", 1)[0].strip() or "error"


def _rows(
    samples: Iterable[Mapping[str, Any]], path: str, since: float, until: float
) -> list[Mapping[str, Any]]:
    key = f"{path}_ok"
    return sorted(
        (s for s in samples if s.get(key) is not None and since <= float(s["t"]) < until),
        key=lambda s: float(s["t"]),
    )


def path_gap(
    samples: Iterable[Mapping[str, Any]],
    path: str,
    t_event: float,
    t_end: float,
    *,
    since: float | None = None,
    stable: float = STABLE,
) -> PathGap:
    """The outage of `path` ('rw', 'leader', or any target name) caused by an event at t_event.

    Only samples in [since, t_end) count (since defaults to 5 s before the event); the first
    failure at or after t_event starts the outage.
    """
    if t_end <= t_event:
        raise AnalysisError(f"window ends ({t_end}) before the event ({t_event})")
    rows = _rows(samples, path, t_event - 5.0 if since is None else since, t_end)
    key = f"{path}_ok"
    before = [s for s in rows if float(s["t"]) < t_event]
    worked = bool(before) and bool(before[-1][key])
    first = next((i for i, s in enumerate(rows) if float(s["t"]) >= t_event and not s[key]), None)
    if first is None:
        return PathGap(path, worked, 0.0)
    first_fail = float(rows[first]["t"])
    last_ok = next((float(s["t"]) for s in reversed(rows[:first]) if s[key]), None)
    start = last_ok if last_ok is not None else first_fail

    recovered: int | None = None
    i = first
    while i < len(rows):
        if not rows[i][key]:
            i += 1
            continue
        t_ok = float(rows[i]["t"])
        j = i
        while j < len(rows) and rows[j][key] and float(rows[j]["t"]) < t_ok + stable:
            j += 1
        if j < len(rows):
            if rows[j][key] or float(rows[j]["t"]) >= t_ok + stable:
                recovered = i  # `stable` seconds of successes from t_ok on
                break
            i = j  # a failure within `stable`: not back yet
            continue
        # The window ends before the run could prove itself: accept a run of half of it.
        if float(rows[-1]["t"]) >= t_ok + stable * 0.5:
            recovered = i
        break

    upto = recovered if recovered is not None else len(rows)
    failed = [s for s in rows[first:upto] if not s[key]]
    later = [s for s in rows[upto:] if not s[key]] if recovered is not None else []
    errors = Counter(error_label(s.get(f"{path}_err")) for s in failed + later)
    longest = _longest(rows[: upto + 1], key, first)
    return PathGap(
        path,
        worked,
        None if recovered is None else float(rows[recovered]["t"]) - start,
        first_fail=first_fail,
        recovered_at=None if recovered is None else float(rows[recovered]["t"]),
        longest=longest,
        failures=len(failed),
        later_failures=len(later),
        errors=dict(errors),
    )


def _longest(rows: Sequence[Mapping[str, Any]], key: str, first: int) -> float:
    best = 0.0
    last_ok: float | None = None
    fail_start: float | None = None
    for idx, s in enumerate(rows):
        t = float(s["t"])
        if s[key]:
            if fail_start is not None:
                best = max(best, t - (last_ok if last_ok is not None else fail_start))
                fail_start = None
            last_ok = t
        elif idx >= first and fail_start is None:
            fail_start = t
    return best


def attributable(contender: PathGap, patroni: PathGap) -> float | None:
    """The contender's gap minus Patroni's own (what the contender added); None if either is."""
    if contender.gap is None or patroni.gap is None:
        return None
    return round(contender.gap - patroni.gap, 3)


def first_change(
    samples: Iterable[Mapping[str, Any]], key: str, old: Any, since: float
) -> tuple[float, Any] | None:
    """(t, value) of the first sample at or after `since` whose `key` is set and differs from
    `old` (e.g. when the client first saw Patroni name a new leader)."""
    for s in sorted(samples, key=lambda s: float(s["t"])):
        if float(s["t"]) >= since and s.get(key) not in (None, old):
            return float(s["t"]), s[key]
    return None


@dataclass(frozen=True)
class HolderReport:
    """Who held (VIP) or was routed (proxy) the RW side during a window."""

    segments: tuple[tuple[float, tuple[str, ...]], ...]  # (t, holders) from t on
    max_holders: int
    multi: tuple[tuple[float, float, tuple[str, ...]], ...]  # (start, end, nodes) with > 1

    def as_dict(self, t0: float) -> dict[str, Any]:
        return {
            "segments": [[round(t - t0, 3), list(h)] for t, h in self.segments],
            "max_holders": self.max_holders,
            "multi": [
                {"start": round(a - t0, 3), "end": round(b - t0, 3), "nodes": list(n)}
                for a, b, n in self.multi
            ],
        }


def holders_in_window(
    timeline: Sequence[tuple[float, Sequence[str]]], since: float, until: float
) -> HolderReport:
    """Cut a holder timeline (changes: from t on, these nodes) to [since, until)."""
    ordered = sorted(((t, tuple(h)) for t, h in timeline), key=lambda c: c[0])
    segments: list[tuple[float, tuple[str, ...]]] = []
    current: tuple[str, ...] | None = None
    for t, holders in ordered:
        if t < since:
            current = holders
            continue
        if t >= until:
            break
        if not segments and current is not None:
            segments.append((since, current))
        segments.append((t, holders))
    if not segments and current is not None:
        segments.append((since, current))
    multi: list[tuple[float, float, tuple[str, ...]]] = []
    for idx, (t, holders) in enumerate(segments):
        if len(holders) > 1:
            end = segments[idx + 1][0] if idx + 1 < len(segments) else until
            multi.append((t, end, holders))
    return HolderReport(
        tuple(segments), max((len(h) for _, h in segments), default=0), tuple(multi)
    )


def nodes_served(
    samples: Iterable[Mapping[str, Any]], path: str, since: float, until: float
) -> dict[str, int]:
    """How many successful attempts each node answered."""
    counts: Counter[str] = Counter()
    for s in _rows(samples, path, since, until):
        if s[f"{path}_ok"]:
            counts[str(s.get(f"{path}_node") or "?")] += 1
    return dict(counts)


def first_served_by(
    samples: Iterable[Mapping[str, Any]], path: str, node: str, since: float, until: float
) -> float | None:
    """Time of the first successful attempt answered by `node` in the window, or None."""
    for s in _rows(samples, path, since, until):
        if s[f"{path}_ok"] and s.get(f"{path}_node") == node:
            return float(s["t"])
    return None


def compact_samples(
    samples: Iterable[Mapping[str, Any]],
    paths: Sequence[str],
    t0: float,
    since: float,
    until: float,
    *,
    nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """Samples of a window as columns (ms since t0; 1 = ok, else the error label), for the JSON;
    the paths in `nodes` also get a column naming the node that answered."""
    rows = sorted(
        (s for s in samples if since <= float(s["t"]) < until), key=lambda s: float(s["t"])
    )
    out: dict[str, Any] = {"t_ms": [round((float(s["t"]) - t0) * 1000) for s in rows]}
    for path in paths:
        col: list[Any] = []
        for s in rows:
            ok = s.get(f"{path}_ok")
            col.append(None if ok is None else (1 if ok else error_label(s.get(f"{path}_err"))))
        out[path] = col
        if path in nodes:
            out[f"{path}_node"] = [s.get(f"{path}_node") for s in rows]
    if any("leader" in s for s in rows):
        out["leader_name"] = [s.get("leader") for s in rows]
    return out


# -- application-model clients (benchmarks/app_clients.py) ------------------------------

APP_PATHS = {"persistent": ("app_rw", "app_leader"), "libpq": ("libpq_rw", "libpq_leader"),
             "pool": ("pool_rw", "app_leader")}  # fmt: skip
# The pool has no direct twin: its reference is the persistent client that follows the leader.


def tried(samples: Iterable[Mapping[str, Any]], path: str) -> bool:
    """Did any sample try `path` (an app client runs only when asked for)?"""
    return any(f"{path}_ok" in s for s in samples)


def failure_summary(
    samples: Sequence[Mapping[str, Any]], path: str, since: float, until: float
) -> dict[str, Any]:
    """Every failed attempt of `path` in [since, until): count, kinds, first-to-last window,
    and the longest single attempt (ms), which shows a lost SYN's retransmit wait."""
    f = failures(samples, path, since, until)
    longest = max(
        (float(s.get(f"{path}_ms") or 0.0) for s in _rows(samples, path, since, until)),
        default=0.0,
    )
    return {"count": f.count, "kinds": dict(f.kinds), "window": round(f.window, 3),
            "max_attempt_ms": round(longest, 1)}  # fmt: skip


def app_record(
    samples: Sequence[Mapping[str, Any]],
    t_event: float,
    t_end: float,
    *,
    since: float,
    stable: float = STABLE,
) -> dict[str, Any]:
    """Per application model present in the samples: its gap through the contender, the
    direct twin's, the extra, and every failed attempt of each."""
    out: dict[str, Any] = {}
    for model, (through_path, direct_path) in APP_PATHS.items():
        if not tried(samples, through_path):
            continue
        through = path_gap(samples, through_path, t_event, t_end, since=since, stable=stable)
        direct = path_gap(samples, direct_path, t_event, t_end, since=since, stable=stable)
        out[model] = {
            "through": through.as_dict(),
            "direct": direct.as_dict(),
            "extra": attributable(through, direct),
            "failures": failure_summary(samples, through_path, t_event, t_end),
            "direct_failures": failure_summary(samples, direct_path, t_event, t_end),
            "valid": through.worked_before and direct.worked_before,
        }
    return out
