"""Tests for the demo's pure parts (pgvip.lab.demo_report): timeline rows, per-scenario
measurement, the table; and run_demo's scenario check."""

from __future__ import annotations

import dataclasses
import re
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
    assert result.worked == {"rw": True, "ro": False, "leader": True, "app_rw": False,
                             "app_leader": False}  # fmt: skip
    assert result.rw_gap == pytest.approx(0.7)  # last ok 11.0, first ok after 11.7
    assert result.leader_gap == pytest.approx(0.4)
    assert result.max_rw_holders == 1
    assert result.ok
    table = demo_report.summary_table([result])
    assert "0.70 s" in table and "0.40 s" in table and "recovered" in table
    assert "n/a" in table  # the RO VIP never worked


def test_the_app_writer_is_measured_against_its_twin() -> None:
    """A lost SYN: the app writer (one attempt at a time, 1 s deadline) waits out one timeout
    that its twin straight to the leader does not; the 100 ms samples do not see it."""
    rw = "oooooooooo" + "ooxxoooooo" + "oooooooooo"
    samples = _samples(rw, rw)
    values = {"o": True, "x": False}
    # app_rw: ok until 11.2, a 1 s timeout from 11.2, ok from 12.3; app_leader: 0.3 s of refusals
    for t, ok, err in [(10.5, "o", None), (11.0, "o", None), (11.2, "x", "timeout"),
                       (12.3, "o", None), (12.8, "o", None)]:  # fmt: skip
        samples.append({"seq": 0, "t": t, "client": "app", "app_rw_ok": values[ok],
                        "app_rw_err": err})  # fmt: skip
    for t, ok in [(10.5, "o"), (11.0, "o"), (11.2, "x"), (11.3, "x"), (11.5, "o"), (12.8, "o")]:
        samples.append({"seq": 0, "t": t, "client": "app", "app_leader_ok": values[ok],
                        "app_leader_err": None if ok == "o" else "refused"})  # fmt: skip
    result = ScenarioResult("switchover", t_event=11.0, t_end=13.0, recovered=True)
    demo_report.measure(result, samples, [(5.0, ("p1",))])
    assert result.app_rw_gap == pytest.approx(1.3) and result.app_leader_gap == pytest.approx(0.5)
    assert demo_report.app_extra(result) == pytest.approx(0.8)
    line = demo_report.step_line(result)
    assert "app writer gap 1.30 s, 1 failed (timeout 1), extra over its twin +0.80 s" in line
    table = demo_report.summary_table([result])
    assert "app extra" in table.splitlines()[0] and "+0.80 s" in table.splitlines()[2]


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


# Per path, one character per 100 ms sample: o ok, r refused, t timeout, - not probed.
_OUTCOMES = {
    "o": (True, None),
    "r": (False, "refused: connection refused"),
    "t": (False, "timeout"),
    "-": (None, None),
}


def _path_samples(start: float = 10.0, **paths: str) -> list[dict[str, Any]]:
    n = len(next(iter(paths.values())))
    assert all(len(v) == n for v in paths.values())
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {"seq": i, "t": round(start + i * 0.1, 3)}
        for path, chars in paths.items():
            ok, err = _OUTCOMES[chars[i]]
            row[f"{path}_ok"] = ok
            if err:
                row[f"{path}_err"] = err
        rows.append(row)
    return rows


def _table_row(table: str, name: str) -> dict[str, str]:
    """The summary table's row for scenario `name`, by column header."""
    lines = table.splitlines()
    header = re.split(r"\s{2,}", lines[0])
    row = next(line for line in lines[2:] if line.startswith(name))
    cells = re.split(r"\s{2,}", row)
    assert len(cells) == len(header), (header, cells)
    return dict(zip(header, cells, strict=True))


def _alternating_step() -> tuple[ScenarioResult, list[dict[str, Any]]]:
    # A failure before the fault (10.5) and one at the step's end (13.0) are outside the span.
    #      before fault  | fault at 11.0: reads alternate with refused, one timeout | end 13.0
    ro = "ooooorooo" + "o" + "or" * 7 + "t" + "o" * 5 + "r" + "o" * 4
    rw = "o" * len(ro)
    result = ScenarioResult("replica-restart", t_event=11.0, t_end=13.0, recovered=True)
    return result, _path_samples(rw=rw, ro=ro, leader=rw)


def test_alternating_failures_show_their_whole_window_not_the_short_gap() -> None:
    result, rows = _alternating_step()
    demo_report.measure(result, rows, [(5.0, ("p1",))])
    # The gap resets on every success: it sees at most 0.30 s (12.2 ok, 12.3/12.4 fail, 12.5 ok).
    assert result.ro_gap == pytest.approx(0.3)
    fails = result.ro_failures
    assert fails is not None
    assert fails.count == 8  # 11.1, 11.3, ..., 12.3 refused and 12.4 timeout
    assert fails.first == pytest.approx(11.1) and fails.last == pytest.approx(12.4)
    assert fails.window == pytest.approx(1.3)
    assert fails.kinds == {"refused": 7, "timeout": 1}
    assert result.ok

    cells = _table_row(demo_report.summary_table([result]), "replica-restart")
    assert cells["read gap (RO VIP)"] == "0.30 s"
    assert cells["read fails"] == "8: refused 7, timeout 1"
    assert cells["read fail window (s)"] == "1.30"
    assert cells["result"] == "recovered"

    line = demo_report.step_line(result)
    assert line.startswith("replica-restart done: ")
    assert "read gap 0.30 s, 8 failed over 1.30 s (refused 7, timeout 1)" in line


def test_a_clean_step_shows_zero_fails_and_no_window() -> None:
    rw = "o" * 40
    result = ScenarioResult("switchover", t_event=11.0, t_end=13.0, recovered=True)
    demo_report.measure(result, _path_samples(rw=rw, ro=rw, leader=rw), [(5.0, ("p1",))])
    for path in ("rw", "ro", "leader"):
        fails = getattr(result, f"{path}_failures")
        assert fails is not None and fails.count == 0 and fails.window == 0.0, path
    cells = _table_row(demo_report.summary_table([result]), "switchover")
    for name in ("write", "read", "Patroni"):
        assert cells[f"{name} fails"] == "0", cells
        assert cells[f"{name} fail window (s)"] == "-", cells
    assert cells["write gap (RW VIP)"] == "none"
    assert demo_report.step_line(result) == (
        "switchover done: write gap none, 0 failed; read gap none, 0 failed; "
        "Patroni gap none, 0 failed"
    )


def test_fails_are_per_path_and_n_a_where_the_path_never_worked() -> None:
    #            before     | fault at 11.0                | end 13.0
    rw = "o" * 10 + "otttoooooo" + "o" * 10
    ld = "o" * 10 + "oorooooooo" + "o" * 10
    result = ScenarioResult("kill-leader", t_event=11.0, t_end=13.0, recovered=True)
    demo_report.measure(result, _path_samples(rw=rw, ro="-" * 30, leader=ld), [])
    cells = _table_row(demo_report.summary_table([result]), "kill-leader")
    assert cells["write fails"] == "3: timeout 3"
    assert cells["write fail window (s)"] == "0.20"
    # One failure: a window of zero, which still says there was one.
    assert cells["Patroni fails"] == "1: refused 1"
    assert cells["Patroni fail window (s)"] == "0.00"
    assert cells["read fails"] == "n/a" and cells["read fail window (s)"] == "n/a"
    assert "read n/a" in demo_report.step_line(result)
    # The integration test reads every 'N.NN s' in the row as a gap (all > 0.1 s): the
    # window cells carry no unit, so only the gaps match.
    row = demo_report.summary_table([result]).splitlines()[2]
    assert re.findall(r"(\d+\.\d+) s", row) == ["0.40", "0.20"]


def test_a_scenario_without_a_fault_has_no_failures() -> None:
    result = ScenarioResult("switchover", error="no leader to switch over from")
    demo_report.measure(result, _path_samples(rw="rrrr"), [])
    assert result.rw_failures is None
    cells = _table_row(demo_report.summary_table([result]), "switchover")
    assert cells["write fails"] == "n/a" and cells["write fail window (s)"] == "n/a"


def test_an_app_client_that_does_not_recover_even_direct_does_not_fail_the_scenario() -> None:
    result = ScenarioResult("leader-link-down", t_event=11.0, t_end=13.0, recovered=True)
    result.worked = {"rw": True, "app_rw": True, "app_leader": True}
    result.recovered_paths = {"rw": True, "app_rw": False, "app_leader": False}
    assert result.ok
    result.recovered_paths["app_leader"] = True  # direct recovered, through the VIP not
    assert not result.ok


def test_dual_samples_show_both_levels_in_the_table() -> None:
    result = ScenarioResult("switchover", t_event=1.0, t_end=2.0, recovered=True)
    assert demo_report.dual_text(result) == "-"
    result.holders = demo_report.HolderCounts(
        rw_dual_samples=1, ro_dual_samples=0, arp_samples=50, rw_arp_dual_samples=3,
        ro_arp_dual_samples=0, max_rw_arp_holders=2, rw_arp_unanswered=0,
    )  # fmt: skip
    assert demo_report.dual_text(result) == "1 / 3"
    assert "1 / 3" in demo_report.summary_table([result]).splitlines()[2]
    unsampled = dataclasses.replace(result.holders, arp_samples=0, rw_arp_dual_samples=0)
    result.holders = unsampled
    assert demo_report.dual_text(result) == "1 / -"
