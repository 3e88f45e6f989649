"""Summary statistics of measured gaps: percentiles by linear interpolation and the p50/p95/max
triple the report prints, with the sample count so a p95 of five events is read as what it is."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class StatsError(ValueError):
    """A statistic was asked of values it is not defined for (empty, NaN, bad quantile)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks.

    This is the "inclusive" definition (numpy's default): p0 is the minimum, p100 the maximum,
    so with few samples a p95 lies between the two largest values.
    """
    if not 0 <= q <= 100:
        raise StatsError(f"percentile must be within 0..100, got {q}")
    if not values:
        raise StatsError("percentile of no values")
    if any(math.isnan(v) for v in values):
        raise StatsError("percentile of values containing NaN")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lower = math.floor(pos)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (pos - lower)


@dataclass(frozen=True)
class Summary:
    """p50/p95/max of the values that exist, and how many events had none (no recovery)."""

    n: int
    p50: float | None
    p95: float | None
    max: float | None
    missing: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "missing": self.missing,
        }


def summarize(values: Iterable[float | None]) -> Summary:
    """Summary of measured values; None counts as missing (e.g. the path never recovered)."""
    present: list[float] = []
    missing = 0
    for v in values:
        if v is None:
            missing += 1
        else:
            present.append(float(v))
    if not present:
        return Summary(0, None, None, None, missing)
    return Summary(
        len(present),
        percentile(present, 50),
        percentile(present, 95),
        max(present),
        missing,
    )


def mean(values: Sequence[float]) -> float:
    if not values:
        raise StatsError("mean of no values")
    return sum(values) / len(values)
