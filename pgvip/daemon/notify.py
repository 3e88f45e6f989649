"""The keepalived-style notify command, run on every transition: CMD INSTANCE STATE PRIORITY."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any


class Notifier:
    """Runs the configured command in the background; a slow or failing command
    never blocks the election, it is only logged."""

    def __init__(self, command: str | None, timeout: float, log: Any) -> None:
        self._argv = shlex.split(command) if command else []
        self._timeout = timeout
        self._log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def transition(self, instance: str, state: str, priority: int) -> None:
        if not self._argv:
            return
        task = asyncio.get_running_loop().create_task(self._run(instance, state, priority))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, instance: str, state: str, priority: int) -> None:
        argv = [*self._argv, instance, state, str(priority)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self._log.error("notify command could not start", argv=argv, error=str(exc))
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self._timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self._log.error("notify command timed out", argv=argv, timeout=self._timeout)
            return
        if proc.returncode != 0:
            self._log.warning(
                "notify command failed",
                argv=argv,
                returncode=proc.returncode,
                stderr=err.decode(errors="replace").strip()[-500:],
            )

    async def drain(self, timeout: float = 0.5) -> None:
        """Give running notify commands a moment to finish at shutdown."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
