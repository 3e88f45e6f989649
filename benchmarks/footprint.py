"""What a contender costs at idle: CPU (of one core) and memory of its processes, read from /proc
over a window, with the parsing kept pure so it can be checked against captured /proc text."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


class FootprintError(RuntimeError):
    """A process to measure is gone or its /proc entry cannot be parsed."""


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the benchmark uses (times in clock ticks)."""

    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int  # CPU of reaped children (keepalived's check scripts land here)
    cstime: int

    @property
    def cpu_ticks(self) -> int:
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/<pid>/stat; the command name may contain spaces and ')'."""
    close = text.rfind(")")
    if close < 0:
        raise FootprintError(f"not a /proc/<pid>/stat line: {text[:60]!r}")
    rest = text[close + 2 :].split()
    try:
        return ProcStat(
            state=rest[0],
            ppid=int(rest[1]),
            utime=int(rest[11]),
            stime=int(rest[12]),
            cutime=int(rest[13]),
            cstime=int(rest[14]),
        )
    except (IndexError, ValueError) as exc:
        raise FootprintError(f"cannot parse /proc/<pid>/stat {text[:60]!r}: {exc}") from exc


def parse_status_kib(text: str, key: str) -> int | None:
    """A `Key:   123 kB` value of /proc/<pid>/status in KiB, or None if absent."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            parts = value.split()
            if parts and parts[0].isdigit():
                return int(parts[0])
    return None


def read_stat(pid: int) -> ProcStat:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except FileNotFoundError as exc:
        raise FootprintError(f"process {pid} is gone") from exc


def read_memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except FileNotFoundError as exc:
        raise FootprintError(f"process {pid} is gone") from exc
    rss = parse_status_kib(text, "VmRSS")
    hwm = parse_status_kib(text, "VmHWM")
    if rss is None or hwm is None:
        raise FootprintError(f"process {pid} has no VmRSS/VmHWM (a kernel thread or a zombie?)")
    return rss * 1024, hwm * 1024


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (keepalived's VRRP child, for example)."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if parse_stat((entry / "stat").read_text()).ppid == pid:
                found.append(int(entry.name))
        except (OSError, FootprintError):
            continue
    return sorted(found)


def with_children(pids: Sequence[int]) -> list[int]:
    """The processes and their direct children (a daemon's worker processes)."""
    out: list[int] = []
    for pid in pids:
        out.append(pid)
        out.extend(c for c in children(pid) if c not in out)
    return out


def cpu_percent(ticks_before: int, ticks_after: int, wall: float) -> float:
    """CPU use in percent of one core over `wall` seconds."""
    if wall <= 0:
        raise FootprintError(f"measurement window must be positive, got {wall}")
    return 100.0 * (ticks_after - ticks_before) / CLK_TCK / wall


def measure(groups: Mapping[str, Sequence[int]], window: float) -> dict[str, dict[str, float]]:
    """CPU % (of one core) over `window` seconds and memory of each group of processes.

    A group is what one node runs for a contender (e.g. keepalived's parent and VRRP child);
    its RSS is the sum of its processes', its HWM the largest single process peak.
    """
    before = {
        name: {pid: read_stat(pid).cpu_ticks for pid in pids} for name, pids in groups.items()
    }
    t0 = time.monotonic()
    time.sleep(window)
    wall = time.monotonic() - t0
    out: dict[str, dict[str, float]] = {}
    for name, pids in groups.items():
        ticks0 = sum(before[name].values())
        ticks1 = sum(read_stat(pid).cpu_ticks for pid in pids)
        memory = [read_memory(pid) for pid in pids]
        out[name] = {
            "cpu_pct": round(cpu_percent(ticks0, ticks1, wall), 3),
            "rss_mib": round(sum(m[0] for m in memory) / MIB, 1),
            "hwm_mib": round(max(m[1] for m in memory) / MIB, 1),
            "processes": len(pids),
            "window_s": round(wall, 2),
        }
    return out


def cpu_during(pids: Sequence[int]) -> CpuMeter:
    """Start measuring the CPU of processes, e.g. HAProxy's during a pgbench run."""
    return CpuMeter(list(pids))


class CpuMeter:
    """CPU % of one core used by a set of processes between construction and `stop()`."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._t0 = time.monotonic()
        self._ticks0 = sum(read_stat(p).cpu_ticks for p in pids)

    def stop(self) -> float:
        ticks = sum(read_stat(p).cpu_ticks for p in self.pids)
        return round(cpu_percent(self._ticks0, ticks, time.monotonic() - self._t0), 2)
