"""Markdown pieces the benchmark reports share: numbers, p50/p95/max triples, tables, and the
measured events of a contender."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from benchmarks.stats import Summary


def fmt_s(value: float | None, unit: str = " s", sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}{unit}" if sign else f"{value:.2f}{unit}"


def triple(summary: Summary, sign: bool = False) -> str:
    if summary.n == 0:
        return "no recovery" if summary.missing else "—"
    text = " / ".join(fmt_s(v, "", sign) for v in (summary.p50, summary.p95, summary.max))
    return text + (f" ({summary.missing} never recovered)" if summary.missing else "")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def rw_events(doc: Mapping[str, Any], scenario: str, contender: str) -> list[dict[str, Any]]:
    """The measured (no error, paths working before) events of one contender and scenario."""
    return [
        e
        for e in doc.get("events", [])
        if e.get("scenario") == scenario
        and e.get("contender") == contender
        and "error" not in e
        and e.get("valid", False)
    ]


def contender_order(doc: Mapping[str, Any]) -> list[str]:
    names = list(doc.get("settings", {}).get("contenders", []))
    for e in doc.get("events", []):
        if e.get("contender") not in names:
            names.append(e["contender"])
    return names
