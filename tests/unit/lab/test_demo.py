"""Tests for the demo's pure parts (pgvip.lab.demo_report): timeline rows, per-scenario
measurement, the table; and run_demo's scenario check."""

from __future__ import annotations

from typing import Any

import pytest

from pgvip.lab import demo, demo_report
from pgvip.lab.demo_report import ScenarioResult
from pgvip.lab.errors import LabError


def test_holder_text() -> None:
    assert demo_report.holder_text(None) == "-"
    assert demo_report.holder_text(()) == "-"
    assert demo_report.holder_text(("p2",)) == "p2"
    assert demo_report.holder_text(("p1", "p2")) == "p1+p2!"


def test_format_row_is_one_short_line() -> None:
    sample = {
        "t": 5.0,
        "leader": "p2",
        "leader_ok": True,
        "rw_ok": False,
        "rw_err": "timeout",
        "ro_ok": True,
        "ro_server": "10.20.30.53",
        "ro_node": "p3",
    }
    row = demo_report.format_row(12.34, ("p2",), (), sample)
    assert row == (
        "   12.3s  RW p2     RO -      leader p2:ok    write FAIL timeout        read ok p3"
    )
    assert len(row) <= 100
    failing = demo_report.format_row(
        0.0,
        ("p1", "p2"),
        None,
        {"leader": None, "leader_ok": False, "rw_ok": True, "rw_node": "p1", "ro_ok": None},
    )
    assert "RW p1+p2!" in failing
    assert "leader -:FAIL" in failing
    assert "write ok p1" in failing
    assert failing.endswith("read -")
    err = demo_report.outcome_text({"rw_ok": False, "rw_err": "read_only: cannot execute"}, "rw")
    assert err == "FAIL read_only"


def _samples(rw: str, leader: str, start: float = 10.0) -> list[dict[str, Any]]:
    values = {"o": True, "x": False, "-": None}
    return [
        {"seq": i, "t": round(start + i * 0.1, 3), "rw_ok": values[a], "leader_ok": values[b]}
        for i, (a, b) in enumerate(zip(rw, leader, strict=True))
    ]


def test_worked_before() -> None:
    rows = _samples("oooooooooo", "xxxxxxxxxx")
    assert demo_report.worked_before(rows, "rw", 11.0)
    assert not demo_report.worked_before(rows, "leader", 11.0)
    assert not demo_report.worked_before(rows, "ro", 11.0)  # never probed
    # The last sample before the fault failed: not "working".
    assert not demo_report.worked_before(_samples("ooooox", "oooooo"), "rw", 10.6)


def test_measure_a_recovered_scenario() -> None:
    #                 before  | fault at 11.0 ...                     | end at 13.0
    rw = "oooooooooo" + "oxxxxxxooo" + "oooooooooo"
    ld = "oooooooooo" + "ooxxxooooo" + "oooooooooo"
    result = ScenarioResult("switchover", t_event=11.0, t_end=13.0, recovered=True)
    timeline = [(5.0, ("p1",)), (11.3, ()), (11.6, ("p2",))]
    demo_report.measure(result, _samples(rw, ld), timeline)
    assert result.worked == {"rw": True, "ro": False, "leader": True}
    assert result.rw_gap == pytest.approx(0.7)  # last ok 11.0, first ok after 11.7
    assert result.leader_gap == pytest.approx(0.4)
    assert result.max_rw_holders == 1
    assert result.ok
    table = demo_report.summary_table([result])
    assert "0.70 s" in table and "0.40 s" in table and "recovered" in table
    assert "n/a" in table  # the RO VIP never worked


def test_measure_no_recovery_and_two_holders() -> None:
    rw = "oooooooooo" + "oxxxxxxxxx" + "xxxxxxxxxx"
    result = ScenarioResult("kill-leader", t_event=11.0, t_end=13.0, recovered=True)
    timeline = [(5.0, ("p1",)), (11.5, ("p1", "p2")), (11.7, ("p2",))]
    demo_report.measure(result, _samples(rw, "o" * 30), timeline)
    assert result.recovered_paths["rw"] is False
    assert result.max_rw_holders == 2
    assert not result.ok
    line = demo_report.summary_table([result]).splitlines()[2]
    assert "no recovery" in line and "FAILED" in line


def test_an_outage_from_an_earlier_scenario_is_not_counted() -> None:
    rw = "xxxxxxxxxx" + "oooooooooo" + "oooooooooo"
    result = ScenarioResult("replica-restart", t_event=11.0, t_end=13.0, recovered=True)
    demo_report.measure(result, _samples(rw, "o" * 30), [])
    assert result.rw_gap == 0.0
    assert result.ok
    assert "none" in demo_report.summary_table([result])


def test_a_scenario_error_fails_the_run() -> None:
    result = ScenarioResult("switchover", error="no streaming replica to switch over to from p1")
    assert not result.ok
    assert "FAILED: no streaming replica" in demo_report.summary_table([result])


def test_unknown_scenario_is_a_lab_error() -> None:
    class NoLab:
        pass

    with pytest.raises(LabError, match="unknown scenario.*partition-all"):
        demo.run_demo(NoLab(), scenarios=("switchover", "partition-all"))  # type: ignore[arg-type]
