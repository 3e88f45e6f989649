"""The lab's state file: what a lab is made of (namespaces, route, processes), written before
each thing is created so `lab down` can undo a lab even after `lab up` was killed mid-flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1

PHASES = ("creating", "starting", "ready", "failed", "stopping")


class StateError(RuntimeError):
    """The state file is missing, unreadable, or not a pgvip lab state."""


@dataclass
class ProcessEntry:
    """One process the lab started: where, what, and its identity (PID + start time)."""

    host: str
    what: str
    pid: int
    start_time: int
    argv: list[str]
    started_at: float

    @property
    def key(self) -> str:
        return process_key(self.host, self.what)


def process_key(host: str, what: str) -> str:
    return f"{host}/{what}"


@dataclass
class LabState:
    """Everything needed to rebuild a `Lab` and to tear it down again."""

    prefix: str
    subnet: str
    nodes: int
    root: str
    pgvip: bool
    pg_bin: str
    pgvip_overrides: dict[str, Any] = field(default_factory=dict)
    phase: str = "creating"
    created_at: float = field(default_factory=time.time)
    namespaces: list[str] = field(default_factory=list)
    route: str | None = None
    processes: dict[str, ProcessEntry] = field(default_factory=dict)
    # The process that ran `up` (PID, start time): a test session that still runs owns its lab.
    owner_pid: int | None = None
    owner_start_time: int | None = None
    version: int = STATE_VERSION

    def to_json(self) -> str:
        doc = asdict(self)
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "state file") -> LabState:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateError(f"{source} is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise StateError(f"{source} does not hold a JSON object")
        if doc.get("version") != STATE_VERSION:
            raise StateError(
                f"{source} has version {doc.get('version')!r}; this pgvip writes {STATE_VERSION}"
            )
        try:
            procs = {
                key: ProcessEntry(**entry) for key, entry in dict(doc.pop("processes", {})).items()
            }
            state = cls(**doc, processes=procs)
        except TypeError as exc:
            raise StateError(f"{source} has unexpected or missing fields: {exc}") from exc
        if state.phase not in PHASES:
            raise StateError(f"{source} has unknown phase {state.phase!r}")
        return state


class StateStore:
    """Reads and atomically rewrites one state file; updates are serialised with flock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> LabState:
        try:
            text = self.path.read_text()
        except FileNotFoundError as exc:
            raise StateError(f"no lab state at {self.path}") from exc
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from exc
        return LabState.from_json(text, source=str(self.path))

    def save(self, state: LabState) -> None:
        """Replace the file atomically: a reader (or a crash) sees old or new, never half."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            fh.write(state.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def update(self) -> Iterator[LabState]:
        """Load, let the caller change, save; other processes updating the same lab wait."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.load()
                yield state
                self.save(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def remove(self) -> None:
        for path in (self.path, self._lock_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
