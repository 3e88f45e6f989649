"""pgvip.status.client: the human table (what a 3 a.m. reader must see) and URL handling."""

from __future__ import annotations

import pytest

from pgvip.status.client import _status_url, render_status
from tests.unit.status.samples import NOW, backend, make_snapshot, ro_info, transition


def test_table_shows_where_each_vip_is_and_why() -> None:
    out = render_status(make_snapshot())
    lines = out.splitlines()
    rw = next(line for line in lines if line.startswith("rw "))
    assert "MASTER" in rw and "10.20.31.100/32" in rw and "this node" in rw
    ro = next(line for line in lines if line.startswith("ro "))
    assert "BACKUP" in ro and "10.20.31.12 (prio 150)" in ro and "0.4s ago" in ro
    assert "rw: MASTER for 97s: master down: no advert for 3.61s" in out
    assert "last takeover took 0.41s" in out
    assert "errors: timeout 2" in out
    assert "priority 150: Patroni role replica" in out  # only a non-configured one is explained
    assert "priority 200: configured" not in out
    assert "role primary, state running, timeline 3" in out


def test_table_shows_backends_with_health_lag_and_errors() -> None:
    snap = make_snapshot()
    assert snap["ro"] is not None
    snap["ro"]["backends"][1] = backend(
        "node3",
        "10.20.31.13",
        state="down",
        healthy=False,
        lag=50 * 1024 * 1024,
        last_error="/replica?lag=16MB 503",
    )
    snap["ro"]["healthy"] = 1
    out = render_status(snap)
    assert "RO backends: 1/2 healthy, dataplane nftables" in out
    node3 = next(line for line in out.splitlines() if line.startswith("node3"))
    assert "down" in node3 and "no" in node3 and "50.0 MB" in node3
    assert "/replica?lag=16MB 503" in node3


def test_table_warns_when_vip_and_state_disagree() -> None:
    snap = make_snapshot(ro=False)
    snap["instances"]["rw"]["held"] = False
    assert "NO (missing!)" in render_status(snap)
    snap = make_snapshot(ro=False, rw_state="BACKUP")
    snap["instances"]["rw"]["held"] = True
    assert "YES (stale!)" in render_status(snap)


def test_table_marks_fallback_and_starting() -> None:
    snap = make_snapshot()
    snap["ro"] = ro_info(fallback_active=True, healthy=0, backends=[])
    snap["pgvip"]["ready"] = False
    out = render_status(snap)
    assert "FALLBACK to primary" in out and "no backends" in out
    assert out.splitlines()[0].endswith(", STARTING")


def test_transitions_are_merged_across_instances_and_limited() -> None:
    snap = make_snapshot()
    snap["instances"]["ro"]["transitions"] = [
        transition(NOW - 98, "INIT", "BACKUP", "eligible (/replica 200)", 150, kind="eligible")
    ]
    out = render_status(snap, transitions=2)
    section = out.split("Recent transitions (oldest first):\n")[1].splitlines()[1:]
    assert [line.split()[2] for line in section] == ["ro", "rw"]  # time-ordered, newest 2
    assert "Recent transitions" not in render_status(snap, transitions=0)


def test_missing_fields_do_not_crash_the_table() -> None:
    # An older or newer daemon may send less; the reader still gets something.
    out = render_status({"instances": {"rw": {"state": "FAULT"}}})
    assert "rw   FAULT" in out


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8010", "http://127.0.0.1:8010/status"),
        ("http://127.0.0.1:8010/", "http://127.0.0.1:8010/status"),
        ("http://127.0.0.1:8010/status", "http://127.0.0.1:8010/status"),
        ("127.0.0.1:8010", "http://127.0.0.1:8010/status"),
        ("https://[::1]:8010", "https://[::1]:8010/status"),
    ],
)
def test_status_url(given: str, expected: str) -> None:
    assert _status_url(given) == expected
