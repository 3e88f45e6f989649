"""Keeps the benchmark harness (benchmarks/) from rotting: its pure parts against synthetic data,
and one short real iteration in a lab of its own (keepalived and HAProxy switchovers, the RO phase
with pgvip's RO VIP and HAProxy, one replica restart), then the report and plots from its JSON."""

from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks import analysis, footprint, report
from benchmarks.contenders.haproxy import HaproxySettings, parse_show_stat, routable
from benchmarks.contenders.haproxy import render_config as haproxy_config
from benchmarks.contenders.keepalived import KeepalivedSettings, render_check_script
from benchmarks.contenders.keepalived import render_config as keepalived_config
from benchmarks.ro_throughput import ThroughputError, balance_ratio, parse_tps, split_clients
from benchmarks.stats import StatsError, percentile, summarize

SMOKE_PREFIX = os.environ.get("PGVIP_TEST_BENCH_PREFIX", "t-bench")
SMOKE_SUBNET = os.environ.get("PGVIP_TEST_BENCH_SUBNET", "10.20.37.0/24")


def _samples(pattern: str, *, start: float = 100.0, step: float = 0.02) -> list[dict[str, Any]]:
    """'o' ok, 'x' failed, 'r' failed read-only, one character per sample of path 'rw'."""
    out = []
    for i, ch in enumerate(pattern):
        ok = ch == "o"
        err = None if ok else ("read_only: cannot execute INSERT" if ch == "r" else "refused: x")
        out.append({"seq": i, "t": start + i * step, "rw_ok": ok, "rw_err": err})
    return out


# -- analysis ----------------------------------------------------------------------


def test_clean_outage_gap_runs_from_last_ok_to_first_stable_ok() -> None:
    samples = _samples("o" * 50 + "x" * 100 + "o" * 100)  # 1 s ok, 2 s down, 2 s ok
    gap = analysis.path_gap(samples, "rw", 100.5, 105.0)
    assert gap.worked_before
    assert gap.failures == 100
    assert gap.gap == pytest.approx(2.02)
    assert gap.longest == pytest.approx(2.02)
    assert gap.errors == {"refused": 100}


def test_flapping_path_is_down_until_one_clean_second() -> None:
    # Alternating failures (a proxy sending every other connection to the demoted primary)
    # shorter than the 1 s stability window keep the path counted as down.
    samples = _samples("o" * 50 + "x" * 20 + ("o" * 10 + "r" * 10) * 5 + "o" * 100)
    gap = analysis.path_gap(samples, "rw", 100.5, 106.0)
    assert gap.failures == 20 + 50
    assert gap.errors == {"refused": 20, "read_only": 50}
    # Last ok at sample 49 (t=100.98); the clean run starts at sample 170 (t=103.4).
    assert gap.gap == pytest.approx(103.4 - 100.98)
    assert gap.longest == pytest.approx(0.42)


def test_no_failure_is_zero_and_no_recovery_is_none() -> None:
    assert analysis.path_gap(_samples("o" * 200), "rw", 101.0, 104.0).gap == 0.0
    never = analysis.path_gap(_samples("o" * 50 + "x" * 150), "rw", 100.5, 104.0)
    assert never.gap is None and never.recovered_at is None
    failing_before = analysis.path_gap(_samples("x" * 60 + "o" * 100), "rw", 101.0, 103.2)
    assert not failing_before.worked_before


def test_attributable_is_the_difference_and_none_without_recovery() -> None:
    a = analysis.PathGap("rw", True, 2.6)
    b = analysis.PathGap("leader", True, 2.4)
    assert analysis.attributable(a, b) == pytest.approx(0.2)
    assert analysis.attributable(analysis.PathGap("rw", True, None), b) is None


def test_holders_window_reports_two_at_once() -> None:
    timeline = [(1.0, ("p1",)), (5.0, ("p1", "p2")), (5.5, ("p2",)), (20.0, ())]
    rep = analysis.holders_in_window(timeline, 4.0, 10.0)
    assert rep.segments[0] == (4.0, ("p1",))
    assert rep.max_holders == 2
    assert rep.multi == ((5.0, 5.5, ("p1", "p2")),)


def test_compact_samples_are_columns_relative_to_the_event() -> None:
    samples = _samples("oxr")
    cols = analysis.compact_samples(samples, ["rw"], 100.0, 0.0, 200.0)
    assert cols["t_ms"] == [0, 20, 40]
    assert cols["rw"] == [1, "refused", "read_only"]


# -- stats, parsers, renderers -----------------------------------------------------


def test_percentile_interpolates_and_rejects_nonsense() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 95) == pytest.approx(1.95)
    with pytest.raises(StatsError):
        percentile([], 50)
    s = summarize([1.0, None, 3.0])
    assert (s.n, s.missing, s.max) == (2, 1, 3.0)


def test_keepalived_config_is_the_seeds() -> None:
    conf = keepalived_config(
        KeepalivedSettings(),
        interface="eth0",
        vip=ipaddress.IPv4Address("10.20.37.50"),
        script_path=Path("/x/check.sh"),
    )
    for line in ("state MASTER", "priority 244", "advert_int 1", "virtual_router_id 51",
                 "interval 1", "rise 1", "fall 1", "10.20.37.50/32", "vrrp_version 3"):  # fmt: skip
        assert line in conf
    assert "weight" not in conf  # the seed's tested config has none: a failed check is FAULT
    assert "weight 1" in keepalived_config(
        KeepalivedSettings(weight=1),
        interface="eth0",
        vip=ipaddress.IPv4Address("10.20.37.50"),
        script_path=Path("/x/check.sh"),
    )
    assert "--fail http://127.0.0.1:8008/primary" in render_check_script()


def test_haproxy_config_and_stats() -> None:
    cfg = haproxy_config(
        HaproxySettings(),
        nodes={"p1": ipaddress.IPv4Address("10.0.0.51")},
        bind=ipaddress.IPv4Address("10.0.0.20"),
        stats_socket=Path("/x/admin.sock"),
    )
    assert "option httpchk OPTIONS /primary" in cfg and "option httpchk OPTIONS /replica" in cfg
    assert "inter 3s fall 3 rise 2 on-marked-down shutdown-sessions" in cfg
    assert "server p1 10.0.0.51:5432 maxconn 100 check port 8008" in cfg
    stat = (
        "# pxname,svname,qcur,status,\n"
        "primary,FRONTEND,,OPEN,\nprimary,p1,0,UP,\nprimary,p2,0,UP 1/3,\nprimary,p3,0,DOWN,\n"
        "primary,BACKEND,0,UP,\n"
    )
    states = parse_show_stat(stat)
    assert states == {"primary": {"p1": "UP", "p2": "UP 1/3", "p3": "DOWN"}}
    assert routable(states["primary"]) == ("p1", "p2")


def test_pgbench_parsing_and_client_split() -> None:
    out = "number of failed transactions: 0\ntps = 12345.678901 (without initial connection time)\n"
    assert parse_tps(out) == pytest.approx(12345.678901)
    with pytest.raises(ThroughputError):
        parse_tps("tps = 1 (including connections establishing)")
    assert split_clients(4, 2) == [2, 2] and split_clients(5, 2) == [3, 2]
    assert balance_ratio({"p1": 600, "p3": 400}, ["p1", "p3"]) == 1.5
    assert balance_ratio({"p1": 1000}, ["p1", "p3"]) is None


def test_proc_stat_parsing_handles_odd_command_names() -> None:
    line = "1234 (pg vip) (x)) S 1 1234 1234 0 -1 4194560 1 0 0 0 70 30 5 6 20 0 1 0 99 0 0"
    st = footprint.parse_stat(line)
    assert (st.state, st.ppid, st.cpu_ticks) == ("S", 1, 70 + 30 + 5 + 6)
    assert footprint.parse_status_kib("VmHWM:\t  5000 kB\nVmRSS:\t  4096 kB\n", "VmRSS") == 4096
    assert footprint.cpu_percent(0, footprint.CLK_TCK, 2.0) == pytest.approx(50.0)


def test_results_json_layout_and_markdown_update(tmp_path: Path) -> None:
    doc = {"schema": 1, "events": [{"samples": {"t_ms": [0, 20], "rw": [1, "refused"]}}]}
    text = report.dumps(doc)
    assert '"t_ms": [0,20]' in text  # lists of scalars stay on one line
    path = tmp_path / "r.json"
    path.write_text(text)
    assert report.load(path) == doc
    md = tmp_path / "B.md"
    md.write_text("# Title\n\nhand-written\n")
    report.update_markdown(md, "first\n")
    report.update_markdown(md, "second\n")
    body = md.read_text()
    assert body.count(report.BEGIN) == 1 and "second" in body and "first" not in body
    assert body.startswith("# Title\n\nhand-written")


# -- one real iteration --------------------------------------------------------------


@pytest.mark.integration
def test_one_short_iteration(tmp_path: Path) -> None:
    from benchmarks import plots
    from benchmarks.suite import Settings, Suite
    from pgvip.lab import netns

    settings = Settings(
        prefix=SMOKE_PREFIX,
        subnet=SMOKE_SUBNET,
        contenders=["keepalived", "haproxy"],
        rounds=1,
        switchovers_per_round=1,
        kills_per_round=0,
        replica_restarts=1,
        replica_kills=1,
        replica_gone=1,
        replica_drains=1,
        pgbench_seconds=2,
        pgbench_rounds=1,
        balance_connects=20,
        footprint_window=0.5,
        # Shorter framing than a real run: the smoke test checks that it works, not how well.
        baseline=0.5,
        settle=1.0,
        jitter=0.5,
        out_dir=str(tmp_path),
    )
    lines: list[str] = []
    suite = Suite(settings, log=lines.append)
    started = time.monotonic()
    try:
        path = suite.run()
    finally:
        # Suite.run brings its lab down itself; this is the safety net if it could not.
        if any(ns.startswith(f"{SMOKE_PREFIX}-") for ns in netns.list_namespaces()):
            from pgvip.lab.cluster import Lab

            Lab(suite.layout).down()
    elapsed = time.monotonic() - started
    log = "\n".join(lines)

    doc = report.load(path)
    assert doc["complete"], log
    assert not doc["errors"], log
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(f"{SMOKE_PREFIX}-")]
    assert not suite.layout.state_file.exists()

    events = {e["contender"]: e for e in doc["events"]}
    assert set(events) == {"keepalived", "haproxy"}, log
    for name, e in events.items():
        assert e["valid"], (name, log)
        # A switchover costs Patroni itself seconds of writes; every contender loses at least
        # most of that too (their writes go to the same PostgreSQL).
        assert 0.5 < e["patroni"]["gap"] < 15, (name, e["patroni"])
        assert e["through"]["gap"] is not None and e["through"]["gap"] > 0.5, (name, log)
        assert e["attributable"] is not None
        assert len(e["samples"]["t_ms"]) == len(e["samples"]["rw"]) > 100
        # Every application-model client ran beside the sampler and was measured.
        assert set(e["app"]) == {"persistent", "libpq", "pool"}, (name, e["app"])
        a = e["app"]["persistent"]
        # The smoke's short settle may end before it is back (gap None): only that it worked
        # before the event and then failed is certain.
        assert a["through"]["worked_before"] and a["direct"]["worked_before"], a
        assert a["failures"]["count"] > 0 and a["failures"]["kinds"], a
        assert "app_rw" in e["samples"] and "libpq_leader" in e["samples"]
    assert events["keepalived"]["holders"]["max_holders"] >= 1
    assert "routing" in events["haproxy"]
    assert doc["footprint"]["keepalived"]["p1"]["processes"] == 2  # parent + VRRP child

    ro = doc["ro"]
    targets = {r["target"]: r["tps"] for r in ro["pgbench"]}
    assert targets["direct"] > 0 and targets["haproxy"] > 0, ro
    assert sum(ro["balance"]["haproxy"]["counts"].values()) == 20
    assert [e.get("scenario") for e in ro["events"]] == [
        "replica-restart", "replica-pg-kill", "replica-gone", "replica-drain"]  # fmt: skip
    assert not [e for e in ro["events"] if "error" in e], log
    *away, drain = ro["events"]
    for e in away:
        assert "haproxy" in e["contenders"] and isinstance(e["director"], bool), e
    for c in [e["contenders"]["haproxy"] for e in away] + [drain["contenders"]["haproxy"]]:
        assert {"failures", "app"} <= set(c), c
        assert c["app"]["count"] >= 0 and "window" in c["app"]
    # A node cut off the switch: HAProxy's reads to it time out until its check gives up.
    assert away[2]["contenders"]["haproxy"]["failures"]["count"] > 0, away[2]
    # HAProxy's health check follows the tag: the drained replica stops getting reads.
    assert drain["contenders"]["haproxy"]["left_after"] is not None, drain
    if ro["contenders"]["pgvip-ro"]["available"]:
        assert targets["pgvip-ro"] > 0

    images = plots.make_all(doc, tmp_path)
    assert {p.name.rsplit("-", 1)[1] for p in images} == {"timeline.png", "gaps.png",
                                                          "throughput.png"}  # fmt: skip
    assert all(p.stat().st_size > 10_000 for p in images)
    section = report.render(doc, images=images, relative_to=tmp_path)
    assert "P1: planned switchover" in section and "| keepalived |" in section
    assert "Application view: planned switchover" in section and "Replica drained" in section
    print(f"benchmark smoke iteration: {elapsed:.0f} s\n{log}")
    assert os.path.exists(path)
