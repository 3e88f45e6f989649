"""What a stopping master leaves for the next run of this daemon: "I resigned at T".

A restart on the Patroni leader used to cost one Master_Down_Interval of RW VIP (3 s at the
defaults): the new process had not heard the priority-0 advert its predecessor sent, so it
listened for a full interval before claiming the VIP. With this record it starts as if it
had heard that advert, the same fast takeover any backup gets after a resign (Skew_Time).

The record is only believed on the same boot (kernel boot_id, because it carries a
CLOCK_MONOTONIC time), for the same VRID and source address, and for one
Master_Down_Interval after the resign; it is deleted when read. Any advert heard afterwards
replaces it, as it would replace a real priority-0 advert.

Where: $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=, kept across restarts with
RuntimeDirectoryPreserve=restart), else /run/pgvip if it exists. No directory: no record,
and a restart listens for a Master_Down_Interval as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgvip.log import Logger
    from pgvip.vrrp.instance import VrrpInstance

DEFAULT_DIR = Path("/run/pgvip")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def record_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    runtime = environ.get("RUNTIME_DIRECTORY")
    if runtime:
        # systemd may list several, separated by ':'; the first is ours.
        return Path(runtime.split(":")[0])
    return DEFAULT_DIR if DEFAULT_DIR.is_dir() else None


def _boot_id(path: Path = BOOT_ID) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _path(directory: Path, vrid: int, source: str) -> Path:
    safe = source.replace(":", "_")
    return directory / f"resigned-vrid{vrid}-{safe}.json"


def write(
    directory: Path, vrid: int, source: str, at: float, *, boot_id: str | None = None
) -> Path:
    """Record that this node, as master of `vrid`, resigned at monotonic time `at`.

    Raises OSError if the directory is not writable; the caller logs it.
    """
    path = _path(directory, vrid, source)
    tmp = path.with_suffix(".tmp")
    body = {"boot_id": boot_id or _boot_id(), "vrid": vrid, "source": source, "resigned_at": at}
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)
    return path


def take(
    directory: Path,
    vrid: int,
    source: str,
    now: float,
    max_age: float,
    *,
    boot_id: str | None = None,
) -> float | None:
    """The resign time left by the previous run, if it is believable; the record is deleted
    either way. None when there is none, or it is from another boot, too old, or garbled."""
    path = _path(directory, vrid, source)
    try:
        raw = path.read_text()
    except OSError:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    try:
        body = json.loads(raw)
        at = float(body["resigned_at"])
        same = body["boot_id"] == (boot_id or _boot_id()) and body["vrid"] == vrid
        same = same and body["source"] == source
    except (ValueError, KeyError, TypeError):
        return None
    if not same or not 0 <= now - at <= max_age:
        return None
    return at


def resume(instance: VrrpInstance, source: str, log: Logger) -> None:
    """If this node's previous run resigned this VRID moments ago, start from that."""
    directory = record_dir()
    if directory is None:
        return
    now = time.monotonic()
    at = take(directory, instance.config.vrid, source, now, max_age=instance.master_down_interval)
    if at is not None:
        instance.resume_after_resign(at)
        log.info(
            "previous run resigned moments ago: taking over after Skew_Time if eligible",
            instance=instance.config.name,
            resigned_ago=round(now - at, 3),
        )


def leave(instance: VrrpInstance, source: str, log: Logger) -> None:
    """Record that this master resigned just now, for the next run."""
    directory = record_dir()
    if directory is None:
        return
    try:
        write(directory, instance.config.vrid, source, time.monotonic())
    except OSError as exc:
        # Only costs the next run a Master_Down_Interval of listening.
        log.warning(
            "cannot leave the resign record for the next run",
            directory=str(directory),
            error=str(exc),
        )
