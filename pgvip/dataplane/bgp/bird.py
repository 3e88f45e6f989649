"""Runs BIRD as pgvip's own child: writes its config, checks it, starts it so that the
kernel kills it when pgvip dies (PR_SET_PDEATHSIG), restarts it when it exits, and reports
its sessions coming up and going down.

Fencing is the point of the child: a crashed pgvip (kill -9, OOM) takes BIRD with it, the
kernel closes the TCP sessions, and the routers withdraw every route at once. Only a host
that goes silent (power, cable) costs a hold time (or BFD's detection time)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pgvip.dataplane.bgp import BgpSpeakerError
from pgvip.dataplane.bgp.bird_config import SpeakerSettings, render, session_name
from pgvip.dataplane.bgp.control import Session, command, sessions

PR_SET_PDEATHSIG = 1
START_TIMEOUT = 5.0  # seconds for a started BIRD to answer on its control socket
SESSION_POLL = 0.5  # seconds between reads of the session table
RESTART_DELAY = 1.0
# A session not established this long after BIRD started (or after it went down) is
# reported once: the router refuses, is unreachable, or has another AS configured.
SESSION_WARN_AFTER = 10.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class BirdSpeaker:
    def __init__(
        self,
        settings: SpeakerSettings,
        *,
        binary: str,
        runtime_dir: str,
        name: str,
        log: Any,
        on_sessions: Callable[[tuple[Session, ...]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.binary = binary
        self.dir = Path(runtime_dir)
        self.config_path = self.dir / f"{name}.bird.conf"
        self.socket_path = str(self.dir / f"{name}.bird.ctl")
        self._log = log.bind(speaker="bird")
        self._on_sessions = on_sessions
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.sessions: tuple[Session, ...] = ()
        self.restarts = 0
        self._clock = clock
        self._down_since: dict[str, float] = {}  # session -> when it was last seen not up
        self._warned: set[str] = set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def established(self) -> int:
        return sum(s.established for s in self.sessions)

    async def start(self) -> None:
        """Write and check the config, start BIRD and wait for its control socket."""
        if not os.access(self.binary, os.X_OK):
            raise BgpSpeakerError(
                f"bgp.binary {self.binary} is not an executable: install BIRD 2 "
                "(Debian: apt install bird2) or set bgp.binary"
            )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(render(self.settings))
        except OSError as exc:
            raise BgpSpeakerError(f"bgp.runtime_dir {self.dir}: {exc}") from None
        check = await asyncio.create_subprocess_exec(
            self.binary,
            "-p",
            "-c",
            str(self.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await check.communicate()
        if check.returncode != 0:
            raise BgpSpeakerError(
                f"BIRD rejects the generated config {self.config_path}: "
                f"{out.decode(errors='replace').strip()}"
            )
        await self._spawn()

    async def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # a dead BIRD's socket would refuse, not answer
        self._proc = await asyncio.create_subprocess_exec(
            self.binary,
            "-f",
            "-c",
            str(self.config_path),
            "-s",
            self.socket_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self._stderr_task = asyncio.get_running_loop().create_task(self._forward_stderr())
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            if self._proc.returncode is not None:
                raise BgpSpeakerError(f"BIRD exited at start with status {self._proc.returncode}")
            try:
                await command(self.socket_path, "show status", timeout=0.5)
                break
            except BgpSpeakerError:
                if asyncio.get_running_loop().time() > deadline:
                    raise BgpSpeakerError(
                        f"BIRD did not answer on {self.socket_path} within {START_TIMEOUT:g} s"
                    ) from None
                await asyncio.sleep(0.05)
        self._log.info(
            "BGP speaker started",
            pid=self._proc.pid,
            config=str(self.config_path),
            peers=[str(p) for p in self.settings.peers],
        )

    async def _forward_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            if "<ERR>" in line or "<FATAL>" in line or "<BUG>" in line:
                self._log.error("bird", line=line)
            elif "<WARN>" in line:
                self._log.warning("bird", line=line)
            else:
                self._log.info("bird", line=line)

    async def run(self) -> None:
        """Supervise: follow the sessions, restart BIRD when it exits."""
        while True:
            assert self._proc is not None
            waiter = asyncio.get_running_loop().create_task(self._proc.wait())
            try:
                while not waiter.done():
                    await self._poll_sessions()
                    await asyncio.wait({waiter}, timeout=SESSION_POLL)
            finally:
                waiter.cancel()
            code = self._proc.returncode
            self._set_sessions(())
            self.restarts += 1
            self._log.error(
                "BGP speaker exited: its sessions closed and the routers withdrew this node's "
                "routes; restarting it",
                status=code,
                restarts=self.restarts,
            )
            await asyncio.sleep(RESTART_DELAY)
            try:
                await self._spawn()
            except BgpSpeakerError as exc:
                self._log.error("BGP speaker restart failed; retrying", error=str(exc))

    async def _poll_sessions(self) -> None:
        try:
            now = await sessions(self.socket_path)
        except BgpSpeakerError as exc:
            self._log.debug("BGP session table unreadable", error=str(exc))
            return
        self._set_sessions(now)

    def _set_sessions(self, now: tuple[Session, ...]) -> None:
        before = {s.name: s.established for s in self.sessions}
        peers = {session_name(i): str(p) for i, p in enumerate(self.settings.peers)}
        for s in now:
            if before.get(s.name, False) != s.established:
                if s.established:
                    self._log.info("BGP session established", peer=peers.get(s.name, s.name))
                else:
                    self._log.warning(
                        "BGP session down", peer=peers.get(s.name, s.name), state=s.info
                    )
        for name, was_up in before.items():
            if was_up and name not in {s.name for s in now}:
                self._log.warning("BGP session down", peer=peers.get(name, name), state="gone")
        self._warn_stuck(now, peers)
        changed = now != self.sessions
        self.sessions = now
        if changed and self._on_sessions is not None:
            self._on_sessions(now)

    def _warn_stuck(self, now: tuple[Session, ...], peers: dict[str, str]) -> None:
        t = self._clock()
        for s in now:
            if s.established:
                self._down_since.pop(s.name, None)
                self._warned.discard(s.name)
                continue
            since = self._down_since.setdefault(s.name, t)
            if t - since >= SESSION_WARN_AFTER and s.name not in self._warned:
                self._warned.add(s.name)
                self._log.warning(
                    "BGP session not established: the router does not answer or refuses "
                    "(check its neighbour config for this node, bgp.peer_as, bgp.local_as, "
                    "and TCP 179 between them); nothing is announced through it",
                    peer=peers.get(s.name, s.name),
                    state=s.info or s.state,
                    seconds=round(t - since, 1),
                )

    async def stop(self) -> None:
        """Stop BIRD (its sessions close: the routers withdraw this node's routes)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 0.3)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
