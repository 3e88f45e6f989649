"""systemd's notify protocol for `Type=notify`: READY=1, STATUS=, STOPPING=1 and a watchdog that
pings only while the daemon is really working (its tasks alive, its heartbeats fresh).

A notification is one datagram to $NOTIFY_SOCKET (a path, or `@name` for an abstract socket);
without NOTIFY_SOCKET (not under systemd) every call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Liveness", "SdNotifier", "SdNotifyError", "sd_notify"]


class SdNotifyError(OSError):
    """A notification could not be delivered (bad NOTIFY_SOCKET, socket gone, ...)."""


def sd_notify(message: str, notify_socket: str) -> None:
    """Send one notification datagram to `notify_socket` (a path or `@abstract` name)."""
    if notify_socket.startswith("@"):
        address = "\0" + notify_socket[1:]  # Linux abstract namespace
    elif notify_socket.startswith("/"):
        address = notify_socket
    else:
        raise SdNotifyError(
            f"NOTIFY_SOCKET={notify_socket!r} is not supported (an absolute path or @name)"
        )
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        raise SdNotifyError(f"cannot notify systemd at {notify_socket}: {exc}") from exc


class SdNotifier:
    """The daemon's side of `Type=notify`. Methods return whether a datagram was sent and
    never raise: systemd's bookkeeping must not be able to take the daemon down."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        log: Any = None,
        pid: int | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.socket: str | None = env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval = _watchdog_usec(env, os.getpid() if pid is None else pid)
        self._log = log
        self._ready = False
        self._status: str | None = None
        self.last_error: str | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.socket is not None

    @property
    def is_ready(self) -> bool:
        return self._ready

    def notify(self, message: str) -> bool:
        """Send a raw notification (e.g. "EXTEND_TIMEOUT_USEC=...")."""
        if self.socket is None:
            return False
        try:
            sd_notify(message, self.socket)
        except SdNotifyError as exc:
            # Log each distinct failure once: a vanished socket would otherwise log per ping.
            if str(exc) != self.last_error and self._log is not None:
                self._log.warning("systemd notification failed", error=str(exc))
            self.last_error = str(exc)
            return False
        self.last_error = None
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1, once: call it after the first successful reconcile (and after a reload)."""
        if self._ready:
            return False
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
            self._status = _one_line(status)
        sent = self.notify("\n".join(lines))
        self._ready = sent or not self.enabled
        return sent

    def status(self, text: str) -> bool:
        """STATUS=text, sent only when it changed (call it as often as you like)."""
        text = _one_line(text)
        if text == self._status:
            return False
        sent = self.notify(f"STATUS={text}")
        if sent or not self.enabled:
            self._status = text
        return sent

    def reloading(self) -> bool:
        """RELOADING=1 (SIGHUP): systemd waits for the next ready()."""
        self._ready = False
        stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={stamp}")

    def stopping(self, status: str | None = None) -> bool:
        text = "STOPPING=1" + (f"\nSTATUS={_one_line(status)}" if status else "")
        return self.notify(text)

    async def watchdog(self, check: Callable[[], str | None] | None = None) -> None:
        """Ping WATCHDOG=1 every half WatchdogSec while `check()` returns None; return at once
        when systemd asked for no watchdog. A ping withheld lets systemd restart us."""
        if self.watchdog_interval is None or self.socket is None:
            return
        period = self.watchdog_interval / 2
        withheld: str | None = None
        while True:
            problem = check() if check is not None else None
            if problem is None:
                if self.notify("WATCHDOG=1"):
                    self.pings += 1
                if withheld is not None and self._log is not None:
                    self._log.info("watchdog pings resumed", after=withheld)
                withheld = None
            elif problem != withheld:
                withheld = problem
                if self._log is not None:
                    self._log.error("watchdog ping withheld: daemon unhealthy", problem=problem)
            await asyncio.sleep(period)


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(text.split())


def _watchdog_usec(env: Mapping[str, str], pid: int) -> float | None:
    """WatchdogSec in seconds, if systemd wants pings from this process."""
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None  # meant for another process (e.g. our parent)
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class Liveness:
    """Whether the daemon is really working, for the watchdog and /health: every watched task
    is still running and every expected heartbeat is fresh."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: list[asyncio.Task[Any]] = []
        self._beats: dict[str, tuple[float, float]] = {}  # name -> (last beat, max age)

    def watch(self, task: asyncio.Task[Any]) -> None:
        """A task that must run as long as the daemon does."""
        self._tasks.append(task)

    def expect(self, name: str, max_age: float) -> None:
        """A heartbeat that must come at least every `max_age` seconds (fresh from now)."""
        self._beats[name] = (self._clock(), max_age)

    def beat(self, name: str) -> None:
        """Record a heartbeat (e.g. from the reconcile loop after each pass)."""
        _, max_age = self._beats.get(name, (0.0, float("inf")))
        self._beats[name] = (self._clock(), max_age)

    def problem(self) -> str | None:
        """None while healthy, else what is wrong (the first problem found)."""
        for task in self._tasks:
            if task.done():
                how = "was cancelled" if task.cancelled() else "ended"
                if not task.cancelled() and task.exception() is not None:
                    how = f"crashed: {task.exception()!r}"
                return f"task {task.get_name()} {how}"
        now = self._clock()
        for name, (last, max_age) in sorted(self._beats.items()):
            age = now - last
            if age > max_age:
                return f"no {name} heartbeat for {age:.1f}s (max {max_age:g}s)"
        return None
