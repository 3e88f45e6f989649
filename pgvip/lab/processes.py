"""Lab processes: start detached (own session, output to a log file), recognise, signal and
wait for them by PID, where a PID is paired with its start time so a reused PID is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# What a spawned lab process inherits: nothing from the caller's environment (an inherited
# PGPASSWORD breaks Patroni's replica cloning, ETCD_* or PGVIP_* would override the configs).
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class ProcessError(RuntimeError):
    """A lab process could not be started, or would not die."""


@dataclass(frozen=True)
class ProcessId:
    """A process as the lab records it: the PID plus its start time (clock ticks since boot)."""

    pid: int
    start_time: int


# Children of this Python process, so that dead ones are reaped instead of lingering as
# zombies (a zombie still owns its PID and would look alive to a plain kill(pid, 0)).
_children: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
_exit_codes: dict[ProcessId, int] = {}


def _reap() -> None:
    # Threads reap at once (the soak samples PIDs while a scenario kills): both may see the
    # same child exit, so the second must not find it gone (a KeyError ended a soak event).
    for pid, (child, started) in list(_children.items()):
        code = child.poll()
        if code is not None:
            _children.pop(pid, None)
            _exit_codes[ProcessId(pid, started)] = code


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) from /proc/<pid>/stat, or None if there is no such PID."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and ')': split after its last ')'.
    rest = text[text.rfind(")") + 2 :].split()
    return rest[0], int(rest[19])


def identify(pid: int) -> ProcessId | None:
    """The ProcessId of a running PID, or None if it is gone."""
    stat = _stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    return ProcessId(pid, stat[1])


def is_alive(proc: ProcessId) -> bool:
    """True while that very process runs (not a zombie, not a newer process with the same PID)."""
    _reap()
    stat = _stat(proc.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == proc.start_time


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ProcessId:
    """Start a detached process (new session, stdin /dev/null, stdout+stderr appended to log).

    Returns as soon as the process exists; the caller records it before waiting on anything.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- pgvip lab {stamp}: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env if env is not None else CLEAN_ENV),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ProcessError(f"cannot start {argv[0]}: {exc}") from exc
    stat = _stat(child.pid)
    # A child that already exited is still our unreaped zombie, so its stat is readable.
    started = stat[1] if stat else 0
    _children[child.pid] = (child, started)
    return ProcessId(child.pid, started)


def send(proc: ProcessId, sig: int) -> bool:
    """Signal the process if it is still the recorded one; False if it was already gone."""
    if not is_alive(proc):
        return False
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def send_pids(pids: Iterable[int], sig: int) -> None:
    """Signal PIDs just read from the kernel (e.g. `ip netns pids`), ignoring ones that exited."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(
    procs: Iterable[ProcessId], timeout: float, *, interval: float = 0.05
) -> list[ProcessId]:
    """Wait until none of the processes is alive; return those still alive at the deadline."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending if is_alive(p)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(interval)


def terminate(proc: ProcessId, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send `sig`, wait up to `timeout`, then SIGKILL; ProcessError if it still survives."""
    if not send(proc, sig):
        return
    if not wait_gone([proc], timeout):
        return
    send(proc, signal.SIGKILL)
    if wait_gone([proc], 5.0):
        raise ProcessError(f"PID {proc.pid} survived SIGKILL for 5 s")


def exit_status(proc: ProcessId) -> int | None:
    """How a child of this Python process ended (negative: killed by that signal), or None if
    it still runs or was not started by this process."""
    _reap()
    return _exit_codes.get(proc)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
