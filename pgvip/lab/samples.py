"""The probe's sample lines, pure: error labels, the JSON line format, who Patroni's /cluster
names leader, and the gap analysis (outages per target) that the demo and the benchmarks read.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TARGETS = ("rw", "ro", "leader")
# The probe's application-model writer (--app): one connection through the RW VIP, and its twin
# that follows Patroni's leader directly (pgvip.lab.app_clients, model a).
APP_TARGETS = ("app_rw", "app_leader")
ERROR_TEXT_MAX = 120


class ProbeError(ValueError):
    """The probe was given settings it cannot run with."""


def classify_error(exc: BaseException) -> str:
    """A short 'label: detail' for a failed attempt; the label is stable for grouping."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    text = " ".join(str(exc).split())
    lowered = text.lower()
    # What the network said wins over a generic connection-failure SQLSTATE (08xxx).
    network = {
        "connection refused": "refused",
        "no route to host": "unreachable",
        "network is unreachable": "unreachable",
        "connection timed out": "timeout",
        "connection reset": "reset",
    }
    label = next((v for k, v in network.items() if k in lowered), None)
    if label is None:
        label = {
            "25006": "read_only",
            "57P01": "admin_shutdown",
            "57P02": "crash_shutdown",
            "57P03": "cannot_connect_now",
            "28P01": "auth",
            "28000": "auth",
            "08006": "connection",
        }.get(getattr(exc, "sqlstate", None) or "")
    if label is None:
        if "password authentication failed" in lowered:
            label = "auth"
        elif "read-only" in lowered:
            label = "read_only"
        elif "terminating connection" in lowered or "server closed the connection" in lowered:
            label = "connection"
        elif "no leader" in lowered:
            label = "no_leader"
        else:
            label = type(exc).__name__
    detail = text[:ERROR_TEXT_MAX]
    return f"{label}: {detail}" if detail and detail != label else label


def leader_from_cluster(doc: Any) -> tuple[str, str] | None:
    """(name, host) of the running leader in a Patroni /cluster answer, or None."""
    if not isinstance(doc, Mapping):
        return None
    for member in doc.get("members") or ():
        if not isinstance(member, Mapping):
            continue
        if member.get("role") in ("leader", "master", "primary") and member.get("host"):
            return str(member.get("name")), str(member["host"])
    return None


def format_sample(sample: Mapping[str, Any]) -> str:
    """One compact JSON line (no spaces, stable key order)."""
    return json.dumps(sample, separators=(",", ":"), sort_keys=False)


def parse_line(line: str) -> dict[str, Any] | None:
    """A probe output line as a dict; None for anything that is not a sample."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "t" not in doc or "seq" not in doc:
        return None
    return doc


@dataclass(frozen=True)
class Gap:
    """`target` failed from `first_fail` on; `last_ok` and `first_ok` bracket the outage.

    `duration` = first_ok - last_ok: the time between the starts of the last success before
    and the first success after, which overstates the outage by at most one interval.
    `first_ok`/`duration` are None if it never recovered within the samples.
    """

    target: str
    last_ok: float | None
    first_fail: float
    first_ok: float | None
    failures: int

    @property
    def duration(self) -> float | None:
        if self.first_ok is None:
            return None
        start = self.last_ok if self.last_ok is not None else self.first_fail
        return self.first_ok - start

    @property
    def recovered(self) -> bool:
        return self.first_ok is not None


def gaps(
    samples: Iterable[Mapping[str, Any]],
    target: str,
    *,
    since: float | None = None,
    until: float | None = None,
) -> list[Gap]:
    """Outages of `target` ('rw', 'ro' or 'leader') among samples with since <= t < until.

    Samples where the target was not probed (its `<target>_ok` is null) are ignored; the
    samples may come in any order.
    """
    if target not in TARGETS + APP_TARGETS:
        known = ", ".join(TARGETS + APP_TARGETS)
        raise ProbeError(f"unknown probe target {target!r}; one of {known}")
    key = f"{target}_ok"
    rows = sorted(
        (s for s in samples if s.get(key) is not None),
        key=lambda s: float(s["t"]),
    )
    found: list[Gap] = []
    last_ok: float | None = None
    fail_start: float | None = None
    failures = 0
    for s in rows:
        t = float(s["t"])
        if since is not None and t < since:
            # Remember the last success before the window: an outage may straddle `since`.
            if s[key]:
                last_ok, fail_start, failures = t, None, 0
            elif fail_start is None:
                fail_start, failures = t, 1
            else:
                failures += 1
            continue
        if until is not None and t >= until:
            break
        if s[key]:
            if fail_start is not None:
                found.append(Gap(target, last_ok, fail_start, t, failures))
                fail_start, failures = None, 0
            last_ok = t
        elif fail_start is None:
            fail_start, failures = t, 1
        else:
            failures += 1
    if fail_start is not None:
        found.append(Gap(target, last_ok, fail_start, None, failures))
    return found


def longest_gap(gap_list: Sequence[Gap]) -> float | None:
    """The longest recovered outage, 0.0 if there was none, None if one never recovered."""
    if any(not g.recovered for g in gap_list):
        return None
    return max((g.duration or 0.0 for g in gap_list), default=0.0)


def error_kind(err: str | None) -> str:
    """'refused: connection refused ...' -> 'refused' (the stable label of classify_error)."""
    if not err:
        return "error"
    return err.split(":", 1)[0].strip() or "error"


@dataclass(frozen=True)
class Failures:
    """Every failed attempt of one path in a window, not only the longest run of them: a path
    whose failures alternate with successes (a balancer still sending some connections to a
    stopped replica) shows its whole failing stretch in `window`."""

    path: str
    count: int
    first: float | None  # start time of the first failed attempt
    last: float | None  # start time of the last failed attempt
    kinds: Mapping[str, int]

    @property
    def window(self) -> float:
        """From the first failed attempt to the last one (0.0 for none or one)."""
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first

    def kinds_text(self) -> str:
        """'refused 3, timeout 1', most frequent first; '-' for none."""
        if not self.kinds:
            return "-"
        ordered = sorted(self.kinds.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{kind} {n}" for kind, n in ordered)


def failures(
    samples: Iterable[Mapping[str, Any]], path: str, since: float, until: float
) -> Failures:
    """The failed attempts of `path` (any `<path>_ok` key) among samples with since <= t <
    until; samples that did not try the path are ignored."""
    key = f"{path}_ok"
    failed = sorted(
        (s for s in samples if s.get(key) is False and since <= float(s["t"]) < until),
        key=lambda s: float(s["t"]),
    )
    kinds: dict[str, int] = {}
    for s in failed:
        kind = error_kind(s.get(f"{path}_err"))
        kinds[kind] = kinds.get(kind, 0) + 1
    return Failures(
        path,
        len(failed),
        float(failed[0]["t"]) if failed else None,
        float(failed[-1]["t"]) if failed else None,
        kinds,
    )
