"""Tests for pgvip.lab.samples: error labels, the line format, the leader in /cluster, gaps."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgvip.lab import samples
from pgvip.lab.samples import Gap, ProbeError


def test_classify_error() -> None:
    assert samples.classify_error(TimeoutError()) == "timeout"
    ro = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    assert samples.classify_error(ro).startswith("read_only: cannot execute INSERT")
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "10.20.30.50", port 5432 failed: '
        "Connection refused\n\tIs the server running on that host?"
    )
    label = samples.classify_error(refused)
    assert label.startswith("refused: connection failed")
    assert "\n" not in label and "\t" not in label
    assert samples.classify_error(OSError("No route to host")).startswith("unreachable")

    class Generic08006(Exception):
        sqlstate = "08006"

    assert samples.classify_error(Generic08006("... failed: No route to host")).startswith(
        "unreachable: "
    )
    assert samples.classify_error(Generic08006("server went away")).startswith("connection: ")
    long = samples.classify_error(RuntimeError("x" * 500))
    assert long.startswith("RuntimeError: ") and len(long) <= len("RuntimeError: ") + 120


def test_leader_from_cluster() -> None:
    doc = {
        "members": [
            {"name": "p1", "role": "replica", "host": "10.20.30.51", "state": "streaming"},
            {"name": "p2", "role": "leader", "host": "10.20.30.52", "state": "running"},
        ]
    }
    assert samples.leader_from_cluster(doc) == ("p2", "10.20.30.52")
    assert samples.leader_from_cluster({"members": [doc["members"][0]]}) is None
    assert samples.leader_from_cluster({"members": [{"role": "leader"}]}) is None
    assert samples.leader_from_cluster("garbage") is None
    assert samples.leader_from_cluster({"members": None}) is None


def test_format_and_parse_line() -> None:
    sample = {"seq": 3, "t": 12.5, "rw_ok": False, "rw_err": 'a "b"\nc', "ro_ok": None}
    line = samples.format_sample(sample)
    assert "\n" not in line
    assert line.startswith('{"seq":3,"t":12.5,"rw_ok":false,')
    assert samples.parse_line(line) == sample
    assert samples.parse_line("not json") is None
    assert samples.parse_line('{"seq": 1}') is None
    assert samples.parse_line("[1, 2]") is None


def _samples(pattern: str, *, start: float = 100.0, step: float = 0.1) -> list[dict[str, Any]]:
    """'o' ok, 'x' failed, '-' not probed: one sample per character."""
    values = {"o": True, "x": False, "-": None}
    return [
        {"seq": i, "t": round(start + i * step, 3), "rw_ok": values[c]}
        for i, c in enumerate(pattern)
    ]


def test_gaps_measure_from_last_ok_to_first_ok() -> None:
    rows = _samples("ooxxxoo-oxo")
    found = samples.gaps(list(reversed(rows)), "rw")
    assert found == [
        Gap("rw", last_ok=100.1, first_fail=100.2, first_ok=100.5, failures=3),
        Gap("rw", last_ok=100.8, first_fail=100.9, first_ok=101.0, failures=1),
    ]
    assert found[0].duration == pytest.approx(0.4)
    assert samples.longest_gap(found) == pytest.approx(0.4)
    assert samples.longest_gap([]) == 0.0


def test_gap_that_never_recovers() -> None:
    (gap,) = samples.gaps(_samples("ooxx"), "rw")
    assert not gap.recovered and gap.duration is None and gap.failures == 2
    assert samples.longest_gap([gap]) is None


def test_gap_without_a_success_before() -> None:
    (gap,) = samples.gaps(_samples("xxo"), "rw")
    assert gap.last_ok is None
    assert gap.duration == pytest.approx(0.2)


def test_gaps_window_keeps_an_outage_that_straddles_since() -> None:
    rows = _samples("ooxxxooxo")
    # since = 100.3 falls inside the first outage: it still starts at the last ok, 100.1.
    found = samples.gaps(rows, "rw", since=100.3, until=100.7)
    assert found == [Gap("rw", last_ok=100.1, first_fail=100.2, first_ok=100.5, failures=3)]
    assert samples.gaps(rows, "rw", since=100.6) == [
        Gap("rw", last_ok=100.6, first_fail=100.7, first_ok=100.8, failures=1)
    ]
    with pytest.raises(ProbeError, match="unknown probe target 'rx'"):
        samples.gaps(rows, "rx")


def test_failures_counts_every_failure_and_the_first_to_last_window() -> None:
    from pgvip.lab.samples import failures

    rows = [
        {"seq": i, "t": 10.0 + i * 0.02, "ro_ok": ok, "ro_err": err}
        for i, (ok, err) in enumerate(
            [(True, None), (False, "refused: x"), (True, None), (False, "refused: y"),
             (True, None), (False, "timeout"), (True, None)]
        )
    ]  # fmt: skip
    rows.append({"seq": 99, "t": 10.05})  # did not try ro: ignored
    got = failures(rows, "ro", 10.0, 11.0)
    assert got.count == 3
    assert got.first == pytest.approx(10.02) and got.last == pytest.approx(10.10)
    assert got.window == pytest.approx(0.08)
    assert dict(got.kinds) == {"refused": 2, "timeout": 1}
    assert got.kinds_text() == "refused 2, timeout 1"
    none = failures(rows, "ro", 10.11, 11.0)
    assert (none.count, none.window, none.kinds_text()) == (0, 0.0, "-")
