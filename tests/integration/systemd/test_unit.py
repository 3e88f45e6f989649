"""deploy/pgvip.service under a real systemd (PID 1 of a Debian 12 container): Type=notify
readiness, the watchdog, Restart=, ExecStopPost=pgvip release, reload, the sandbox's user
and capabilities, and journal fields (issue 15, item 3)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.integration.systemd.conftest import UNIT, VIP, Pgvip, render_config, wait_for

pytestmark = pytest.mark.integration

NET_ADMIN_AND_RAW = 1 << 12 | 1 << 13


def test_the_unit_stays_activating_until_pgvip_sends_ready(pgvip: Pgvip) -> None:
    # Stop the process as soon as it exists: it has not reconciled yet, so systemd must
    # keep the unit in `activating` however long it stays stopped.
    pid = int(pgvip.m.sh(
        f"systemctl start --no-block {UNIT}; "
        f"while pid=$(systemctl show -p MainPID --value {UNIT}); [ \"$pid\" = 0 ]; do :; done; "
        "kill -STOP $pid; echo $pid"
    ))  # fmt: skip
    try:
        for _ in range(10):
            assert pgvip.state() == ("activating", "start")
            time.sleep(0.2)
        assert not pgvip.events("ready"), "READY came before the test could stop the process"
    finally:
        pgvip.m.sh(f"kill -CONT {pid}")
    wait_for(lambda: pgvip.state() == ("active", "running"), 20, "the unit to become active")
    props = pgvip.m.show(UNIT, "ActiveEnterTimestampMonotonic", "ExecMainStartTimestampMonotonic")
    [ready] = pgvip.events("ready")
    [started] = pgvip.events("started")
    # journald stamps entries on arrival; READY=1 is sent just before the "ready" line.
    assert int(props["ExecMainStartTimestampMonotonic"]) < int(started["__MONOTONIC_TIMESTAMP"])
    assert int(started["__MONOTONIC_TIMESTAMP"]) <= int(props["ActiveEnterTimestampMonotonic"])
    assert (
        abs(int(ready["__MONOTONIC_TIMESTAMP"]) - int(props["ActiveEnterTimestampMonotonic"]))
        < 500_000
    )
    assert pgvip.main_pid() == pid
    # STATUS= from the first reconcile, e.g. "rw BACKUP" (MASTER follows after the election).
    assert pgvip.prop("StatusText").startswith("rw ")
    pgvip.wait_vip()


def test_the_watchdog_restarts_a_stalled_daemon(pgvip: Pgvip) -> None:
    # The shipped WatchdogSec=10s, shortened for the test.
    pgvip.dropin("watchdog", "[Service]\nWatchdogSec=3s\n")
    pgvip.start()
    pgvip.wait_vip()
    first = pgvip.main_pid()
    time.sleep(4)  # longer than WatchdogSec: a healthy daemon keeps pinging
    assert pgvip.prop("NRestarts") == "0"
    assert pgvip.main_pid() == first
    stopped = time.time()  # the container shares the host's clock
    pgvip.m.sh(f"kill -STOP {first}")
    wait_for(lambda: pgvip.main_pid() not in (0, first), 20, "a new main PID")
    entries = pgvip.journal()
    messages = [str(e.get("MESSAGE", "")) for e in entries]
    [timeout] = [e for e in entries if "Watchdog timeout (limit 3s)!" in str(e.get("MESSAGE"))]
    # The last ping came at most WatchdogSec/2 before the stop; journald stamps on arrival.
    fired = int(timeout["__REALTIME_TIMESTAMP"]) / 1e6 - stopped
    assert 3 / 2 - 0.3 < fired < 3 + 1, f"watchdog fired {fired:.2f} s after SIGSTOP"
    assert any("Failed with result 'watchdog'" in msg for msg in messages), messages
    assert any(f"pgvip: released {VIP}/24" in msg for msg in messages), messages
    assert pgvip.prop("NRestarts") == "1"
    pgvip.wait_vip()


def test_kill_9_restarts_and_exec_stop_post_releases_the_vip_first(pgvip: Pgvip) -> None:
    pgvip.start()
    pgvip.wait_vip()
    first = pgvip.main_pid()
    pgvip.m.sh(f"kill -9 {first}")
    wait_for(lambda: pgvip.main_pid() not in (0, first), 15, "a new main PID")
    wait_for(lambda: pgvip.state() == ("active", "running"), 20, "the restarted unit")
    messages = pgvip.messages()

    def index(text: str) -> int:
        found = [i for i, msg in enumerate(messages) if text in msg]
        assert found, f"{text!r} not in the journal: {messages}"
        return found[-1]

    killed = index("Main process exited, code=killed, status=9/KILL")
    released = index(f"pgvip: released {VIP}/24")
    scheduled = index("Scheduled restart job")
    assert killed < released < scheduled
    assert pgvip.prop("NRestarts") == "1"
    # The new run found nothing left over: ExecStopPost had already removed the VIP.
    assert not pgvip.events("removed a VIP left by an earlier run")
    pgvip.wait_vip()


def test_exec_stop_post_removes_the_vip_when_the_daemon_crashes_for_good(pgvip: Pgvip) -> None:
    pgvip.dropin("norestart", "[Service]\nRestart=no\n")
    pgvip.start()
    pgvip.wait_vip()
    pgvip.m.sh(f"kill -9 {pgvip.main_pid()}")
    wait_for(lambda: pgvip.state()[0] == "failed", 10, "the unit to fail")
    assert not pgvip.has_vip()
    assert pgvip.prop("Result") == "signal"


def test_reload_applies_a_new_poll_interval_without_dropping_the_vip(pgvip: Pgvip) -> None:
    pgvip.start()
    pgvip.wait_vip()
    pid = pgvip.main_pid()

    def rate() -> float:
        before, t0 = pgvip.polls(), time.monotonic()
        time.sleep(2)
        return (pgvip.polls() - before) / (time.monotonic() - t0)

    fast = rate()
    samples: list[bool] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(pgvip.has_vip())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        pgvip.m.write("/etc/pgvip/pgvip.toml", render_config(poll_interval=0.5))
        pgvip.m.sh(f"systemctl reload {UNIT}")
        assert pgvip.state() == ("active", "running")
        slow = rate()
    finally:
        done.set()
        sampler.join(5)
    assert pgvip.main_pid() == pid
    assert pgvip.events("reload: applied without re-election")
    # ~10/s before and ~2/s after; loose bounds, as the CI machine may be busy.
    assert fast > 3 * slow and 1 < slow <= 2.5, f"{fast:.1f} then {slow:.1f} polls/s"
    assert len(samples) > 50 and all(samples), "the VIP was missing during the reload"


def test_the_daemon_runs_as_pgvip_with_only_net_admin_and_net_raw(pgvip: Pgvip) -> None:
    pgvip.start()
    pid = pgvip.main_pid()
    status = pgvip.m.sh(f"cat /proc/{pid}/status")
    fields = dict(re.findall(r"^(\w+):\s+(.*)$", status, re.M))
    uid, gid = pgvip.m.sh("id -u pgvip").strip(), pgvip.m.sh("id -g pgvip").strip()
    assert fields["Uid"].split() == [uid] * 4
    assert fields["Gid"].split() == [gid] * 4
    assert uid != "0"
    for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(fields[caps], 16) == NET_ADMIN_AND_RAW, f"{caps}={fields[caps]}"
    assert fields["NoNewPrivs"] == "1"
    # And it can use them: the VIP is added over netlink, VRRP goes out a raw socket.
    pgvip.wait_vip()


def test_logs_reach_the_journal_as_fields(pgvip: Pgvip) -> None:
    pgvip.start()
    pgvip.wait_vip()
    wait_for(lambda: [e for e in pgvip.events("transition") if e.get("PGVIP_TO") == "MASTER"],
             5, "a transition to MASTER in the journal")  # fmt: skip
    [master] = [e for e in pgvip.events("transition") if e.get("PGVIP_TO") == "MASTER"]
    assert master["PGVIP_INSTANCE"] == "rw"
    assert master["PGVIP_FROM"] == "BACKUP"
    assert master["PGVIP_REASON"]
    assert master["SYSLOG_IDENTIFIER"] == "pgvip"
    assert master["PRIORITY"] == "6"
    assert master["_SYSTEMD_UNIT"] == UNIT
    assert master["MESSAGE"].startswith("transition instance=rw from=BACKUP to=MASTER")
    # journalctl can filter on them.
    out = pgvip.m.sh(f"journalctl -q -u {UNIT} -o cat --no-pager PGVIP_EVENT=started")
    assert "started interface=eth0" in out
