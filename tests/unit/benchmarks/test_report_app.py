"""The report's application view, rendered from hand-made results documents."""

from __future__ import annotations

from typing import Any

from benchmarks import report


def _fail(count: int, window: float, longest_ms: float, **kinds: int) -> dict[str, Any]:
    return {"count": count, "kinds": kinds, "window": window, "max_attempt_ms": longest_ms}


def _app(extra: float, count: int, longest_ms: float = 40.0) -> dict[str, Any]:
    return {"through": {}, "direct": {}, "extra": extra, "valid": True,
            "failures": _fail(count, 0.1, longest_ms, reset=count),
            "direct_failures": _fail(1, 0.0, 20.0, refused=1)}  # fmt: skip


def _event(i: int, scenario: str, extra: float, libpq_ms: float) -> dict[str, Any]:
    return {"id": i, "round": 1, "contender": "pgvip-lab", "scenario": scenario,
            "detail": "p1", "valid": True, "attributable": 0.01, "read_only_writes": 0,
            "patroni": {"gap": 1.0}, "through": {"gap": 1.0 + extra},
            "holders": {"max_holders": 1, "multi": []},
            "app": {"persistent": _app(extra, 3), "libpq": _app(extra, 2, libpq_ms)}}  # fmt: skip


def _doc(extras: list[float], libpq_ms: float, ro_reads: int, drain_reads: int) -> dict[str, Any]:
    events = [_event(i, "switchover", x, libpq_ms) for i, x in enumerate(extras)]
    restart = {"id": 1, "scenario": "replica-restart", "detail": "p2", "contenders": {
        "pgvip-ro": {"path": {"gap": 0.2, "failures": 4, "later_failures": 0},
                     "failures": _fail(4, 0.2, 1000.0, refused=4), "reincluded_after": 0.5,
                     "served": {"p2": 10}, "app": _fail(ro_reads, 0.25, 30.0, refused=ro_reads)},
    }}  # fmt: skip
    drain = {"id": 2, "scenario": "replica-drain", "detail": "p3", "contenders": {
        "pgvip-ro": {"failures": _fail(0, 0.0, 5.0), "left_after": 0.6, "back_after": None,
                     "served": {}, "app": _fail(drain_reads, 0.0, 5.0)},
    }}  # fmt: skip
    return {"schema": 1, "run_id": "t", "settings": {"contenders": ["pgvip-lab"]},
            "events": events, "ro": {"events": [restart, drain]}}  # fmt: skip


def test_goals_met_and_the_app_tables_side_by_side_with_the_sampler() -> None:
    text = report.render(_doc([0.01, 0.02, 0.03], 60.0, ro_reads=3, drain_reads=0))
    goals = text.split("#### Goals (issue 12)")[1].split("####")[0]
    assert goals.count("| met |") == 4 and "missed" not in goals
    assert "+0.02 s p50, +0.03 s max (n = 3)" in goals
    table = text.split("#### Application view: planned switchover")[1]
    row = next(line for line in table.splitlines() if line.startswith("| pgvip-lab | (a)"))
    # extra p50/p95/max beside the sampler's attributable figure; 3 failures per event, reset
    assert "+0.02 / +0.03 / +0.03" in row and "+0.01 / +0.01 / +0.01" in row
    assert "reset: 9" in row
    assert "Application view: kill" not in text  # no kill events: no table
    assert "Replica drained on purpose" in text and "not back" in text


def test_goals_missed_name_the_figure() -> None:
    text = report.render(_doc([0.01, 0.70, 0.80], 1010.0, ro_reads=28, drain_reads=2))
    goals = text.split("#### Goals (issue 12)")[1].split("####")[0]
    assert goals.count("**missed**") == 4
    assert "3 of 3 events; longest attempt 1.01 s" in goals  # a lost SYN cost the libpq client
    assert "0.25 s, 28 reads (n = 1)" in goals and "2 in 1 drains" in goals


def test_a_results_file_from_before_the_app_clients_still_renders() -> None:
    doc = _doc([0.01], 60.0, 0, 0)
    for e in doc["events"]:
        del e["app"]
    restart = doc["ro"]["events"][0]["contenders"]["pgvip-ro"]
    del restart["app"], restart["failures"]
    doc["ro"]["events"] = doc["ro"]["events"][:1]
    del doc["ro"]["events"][0]["scenario"]
    text = report.render(doc)
    assert "Application view" not in text and "Goals (issue 12)" not in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 | p2 | — | pgvip-ro"))
    assert "| 4 | — | — |" in row  # sampler count from the old gap record; no window, no app


def test_a_killed_postmaster_and_a_gone_node_get_their_own_tables_and_rows() -> None:
    doc = _doc([0.01], 60.0, ro_reads=3, drain_reads=0)
    first = doc["ro"]["events"][0]
    kill = first | {"id": 3, "scenario": "replica-pg-kill", "director": True}
    gone = first | {"id": 4, "scenario": "replica-gone", "director": False, "contenders": {
        "pgvip-ro": first["contenders"]["pgvip-ro"]
        | {"app": _fail(9, 1.4, 1000.0, timeout=2, refused=7)}}}  # fmt: skip
    doc["ro"]["events"] += [kill, gone]
    text = report.render(doc)
    assert "Replica's postmaster killed (kill -9)" in text and "cut off the switch" in text
    assert any(line.startswith("| 3 | p2 | yes | pgvip-ro") for line in text.splitlines())
    assert any(line.startswith("| 4 | p2 | no | pgvip-ro") for line in text.splitlines())
    goals = text.split("#### Goals (issue 12)")[1].split("####")[0]
    assert "pgvip-ro: replica's postmaster killed, ≤ 0.3 s" in goals
    summary = text.split("RO events per contender:")[1]
    gone_row = next(line for line in summary.splitlines() if "| replica-gone |" in line)
    assert "| 9 / 9 |" in gone_row and "| 2 |" in gone_row  # failed reads; timeouts
