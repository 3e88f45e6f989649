"""Tests for pgvip.lab.processes with ordinary local child processes (no root, no network)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pgvip.lab import processes
from pgvip.lab.processes import ProcessError, ProcessId


def test_spawn_logs_output_in_a_new_session_with_a_clean_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", "leaks")
    log = tmp_path / "logs" / "x.log"
    script = "import os; print(os.getsid(0) == os.getpid(), os.environ.get('PGPASSWORD'))"
    proc = processes.spawn([sys.executable, "-c", script], log)
    assert processes.wait_gone([proc], 10) == []
    lines = log.read_text().splitlines()
    assert lines[0].startswith("--- pgvip lab ")
    assert lines[1] == "True None"
    assert processes.exit_status(proc) == 0


def test_log_is_appended_across_restarts(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    for word in ("one", "two"):
        proc = processes.spawn(["/bin/echo", word], log)
        processes.wait_gone([proc], 10)
    text = log.read_text()
    assert text.index("one") < text.index("two")


def test_identity_is_pid_plus_start_time(tmp_path: Path) -> None:
    proc = processes.spawn(["sleep", "30"], tmp_path / "s.log")
    try:
        assert processes.is_alive(proc)
        assert processes.identify(proc.pid) == proc
        # Same PID, other start time: a reused PID is not our process and is never signalled.
        impostor = ProcessId(proc.pid, proc.start_time + 1)
        assert not processes.is_alive(impostor)
        assert processes.send(impostor, signal.SIGKILL) is False
        assert processes.is_alive(proc)
    finally:
        processes.send(proc, signal.SIGKILL)
    assert processes.wait_gone([proc], 10) == []
    assert processes.exit_status(proc) == -signal.SIGKILL
    assert processes.send(proc, signal.SIGKILL) is False


def test_a_dead_unreaped_child_counts_as_dead(tmp_path: Path) -> None:
    proc = processes.spawn(["true"], tmp_path / "t.log")
    time.sleep(0.3)  # exited, and not waited for by anyone yet
    assert not processes.is_alive(proc)
    assert processes.identify(os.getpid()) is not None


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    proc = processes.spawn([sys.executable, "-c", stubborn], tmp_path / "t.log")
    time.sleep(0.5)  # let it install the handler
    started = time.monotonic()
    processes.terminate(proc, signal.SIGTERM, timeout=0.5)
    assert not processes.is_alive(proc)
    assert processes.exit_status(proc) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_wait_gone_returns_the_survivors(tmp_path: Path) -> None:
    proc = processes.spawn(["sleep", "30"], tmp_path / "s.log")
    try:
        assert processes.wait_gone([proc], 0.2) == [proc]
    finally:
        processes.send(proc, signal.SIGKILL)


def test_spawn_of_a_missing_program_is_a_process_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match="cannot start /nonexistent/prog"):
        processes.spawn(["/nonexistent/prog"], tmp_path / "x.log")


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    assert processes.tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert processes.tail(log, 3) == "line 97\nline 98\nline 99"


def test_two_threads_reaping_the_same_exit_do_not_collide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both threads see the child exit before either drops it (a barrier in poll()): the soak
    samples PIDs in one thread while a scenario kills in another, and this was a KeyError."""
    import threading

    both = threading.Barrier(2, timeout=5)

    class Exited:
        def poll(self) -> int:
            both.wait()
            return -9

    monkeypatch.setattr(processes, "_children", {4242: (Exited(), 7)})
    monkeypatch.setattr(processes, "_exit_codes", {})
    errors: list[BaseException] = []

    def reap() -> None:
        try:
            processes._reap()
        except BaseException as exc:  # noqa: BLE001 (the test reports it)
            errors.append(exc)

    threads = [threading.Thread(target=reap) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert processes._children == {} and processes._exit_codes == {ProcessId(4242, 7): -9}
