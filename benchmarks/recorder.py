"""Recording during a run: the client process in the lab's client namespace (its JSON lines
collected by a thread) and a poller that records when a value (HAProxy's routable servers)
changes, both on the monotonic clock the client stamps its samples with."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.contenders import Endpoint
from pgvip.lab.cluster import Lab
from pgvip.lab.samples import parse_line

REPO_ROOT = Path(__file__).resolve().parent.parent


class RecorderError(RuntimeError):
    """The client died or printed nothing, or a poller could not run."""


class ClientRun:
    """`python -m benchmarks.client` in the client namespace, its samples kept in memory."""

    def __init__(
        self,
        lab: Lab,
        *,
        writes: Sequence[tuple[str, Endpoint]] = (),
        reads: Sequence[tuple[str, Endpoint]] = (),
        leader: bool = True,
        interval: float = 0.02,
        timeout: float = 1.0,
        app_models: Sequence[str] = (),
        read_app: bool = False,
    ) -> None:
        layout = lab.layout
        self.log_path = lab.log_path("client", "bench-client")
        argv = [
            "ip", "netns", "exec", layout.client_ns,
            str(Path(sys.executable).parent / "python"), "-m", "benchmarks.client",
            "--interval", str(interval), "--timeout", str(timeout),
        ]  # fmt: skip
        argv += [f"--write={name}={ep}" for name, ep in writes]
        argv += [f"--read={name}={ep}" for name, ep in reads]
        if leader:
            argv += [f"--patroni={layout.patroni_url(n)}" for n in layout.node_names()]
        if app_models:
            argv += ["--app-models", ",".join(app_models)]
        if read_app:
            argv += ["--read-app"]
        self.argv = argv
        self.samples: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._first = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self, wait: float = 20.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115  (owned by the child until it exits)
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=REPO_ROOT,
                env={
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG": "C.UTF-8",
                    "PYTHONPATH": str(REPO_ROOT),
                },
                start_new_session=True,
            )
        finally:
            log.close()
        self._thread = threading.Thread(target=self._read, name="bench-client", daemon=True)
        self._thread.start()
        if not self._first.wait(wait):
            code = self._proc.poll()
            self.stop()
            raise RecorderError(
                f"the benchmark client printed nothing in {wait:.0f} s (exit status {code}); "
                f"see {self.log_path}"
            )

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            sample = parse_line(raw)
            if sample is None:
                continue
            with self._lock:
                self.samples.append(sample)
            self._first.set()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def latest_t(self) -> float | None:
        with self._lock:
            return float(self.samples[-1]["t"]) if self.samples else None

    def wait_until(self, t: float, timeout: float = 5.0) -> None:
        """Wait for samples up to time `t` (lines arrive up to the attempt timeout late)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest_t()
            if latest is not None and latest >= t:
                return
            if not self.alive():
                raise RecorderError(f"the benchmark client exited; see {self.log_path}")
            time.sleep(0.05)
        raise RecorderError(f"no client samples up to the window's end within {timeout} s")

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.samples)

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        # By PID: the client's own session (`ip netns exec` execs python in place).
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ClientRun:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChangePoller:
    """Calls `read()` every `interval` in a thread and keeps (t, value) for every change."""

    def __init__(self, read: Callable[[], Any], interval: float = 0.05, name: str = "poller"):
        self.read = read
        self.interval = interval
        self.timeline: list[tuple[float, Any]] = []
        self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        last: Any = object()
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                value = self.read()
            except Exception as exc:  # counted, never fatal: the event still runs
                self.errors += 1
                self.last_error = str(exc)
                value = last  # unknown: keep the last known value
            if value != last:
                self.timeline.append((t, value))
                last = value
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> ChangePoller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
