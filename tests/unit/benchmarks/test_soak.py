"""The soak's pure parts: its seeded schedule, its per-scenario summary and its RSS growth
per kind of event."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.soak import growth_by_event, schedule, summarize


def test_the_schedule_has_every_event_once_in_a_seeded_order() -> None:
    counts = {"switchovers": 3, "kills": 2, "partitions": 1, "etcd_outages": 1}
    events = schedule(counts, seed=1)
    assert sorted(events) == sorted(
        ["switchover"] * 3 + ["kill-leader"] * 2 + ["leader-link-down", "etcd-outage-failsafe"]
    )
    assert schedule(counts, seed=1) == events and schedule(counts, seed=2) != events


def result(name: str, gap: float | None, holders: int = 1, ok: bool = True,
           reads: int = 0, arp_dual: int = 0) -> dict[str, Any]:  # fmt: skip
    counts = {"rw_dual_samples": holders - 1, "ro_dual_samples": 0, "arp_samples": 100,
              "rw_arp_dual_samples": arp_dual, "ro_arp_dual_samples": 0}  # fmt: skip
    return {"name": name, "ok": ok, "max_rw_holders": holders, "rw_gap": gap, "holders": counts,
            "app_rw_gap": gap, "app_leader_gap": 0.1 if gap else None,
            "worked": {"rw": True, "app_rw": True, "app_leader": True},
            "ro_failures": {"count": reads} if reads else None}  # fmt: skip


def test_the_summary_counts_two_holder_and_failed_events() -> None:
    s = summarize([result("switchover", 2.0), result("switchover", 3.0, holders=2, reads=4),
                   result("kill-leader", 20.0, ok=False)])  # fmt: skip
    assert s["switchover"]["events"] == 2 and s["switchover"]["two_rw_holders"] == 1
    assert s["switchover"]["write_gap_p50"] == 2.5 and s["switchover"]["write_gap_max"] == 3.0
    assert s["switchover"]["app_extra_max"] == 2.9 and s["switchover"]["failed_reads_total"] == 4
    assert s["kill-leader"]["not_ok"] == 1


def test_the_summary_adds_dual_holder_samples_at_both_levels() -> None:
    s = summarize([result("switchover", 2.0, holders=2, arp_dual=3), result("switchover", 1.0,
                   arp_dual=1), {**result("kill-leader", 1.0), "holders": None}])  # fmt: skip
    assert s["switchover"]["rw_dual_samples_addr"] == 1
    assert s["switchover"]["rw_dual_samples_arp"] == 4 and s["switchover"]["arp_samples"] == 200
    assert s["kill-leader"]["rw_dual_samples_arp"] == 0 and s["kill-leader"]["arp_samples"] == 0


def test_rss_growth_is_summed_per_kind_of_event() -> None:
    samples = [{"t": 0.0, "p1": 100, "p2": 100}, {"t": 5.0, "p1": 100, "p2": 150},
               {"t": 10.0, "p1": 130, "p2": 150}, {"t": 15.0, "p1": 130, "p2": 140},
               {"t": 20.0, "p1": 135, "p2": 140}]  # fmt: skip
    docs = [{"name": "switchover", "t_event": 1.0}, {"name": "kill-leader", "t_event": 6.0},
            {"name": "switchover", "t_event": 16.0}]  # fmt: skip
    # switchover 1: samples 0 -> 5; kill: 5 -> 15; switchover 2: 15 -> the last sample.
    assert growth_by_event(docs, samples) == {
        "switchover": {"p1": 0 + 5, "p2": 50 + 0},
        "kill-leader": {"p1": 30, "p2": -10},
    }
    assert growth_by_event(docs, []) == {}


def test_loop_stalls_are_summed_from_each_nodes_pgvip_log(tmp_path: Path) -> None:
    from benchmarks.soak import loop_stalls

    class _Layout:
        def node_names(self) -> list[str]:
            return ["p1", "p2"]

    class _Lab:
        layout = _Layout()

        def log_path(self, node: str, what: str) -> Path:
            return tmp_path / f"{node}-{what}.log"

    (tmp_path / "p1-pgvip.log").write_text(
        '{"event": "event loop stalled: adverts ...", "late_s": 0.41}\n'
        '{"event": "ready"}\n'
        '{"event": "event loop stalled: adverts ...", "late_s": 1.2,'
        ' "stalls_since_last_warning": 3, "worst_since_last_warning_s": 0.9}\n'
    )
    got = loop_stalls(_Lab())
    assert got["p1"] == {"stalls": 5, "worst_warned_s": 1.2}
    assert got["p2"] == {"stalls": 0, "worst_warned_s": 0.0}  # no log: none reported
