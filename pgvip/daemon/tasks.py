"""The engines' asyncio tasks: started by name, the first crash of any of them reported once
on `failed` (the daemon then stops with exit 1), and all cancelled together at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

from pgvip.log import Logger


class EngineTasks:
    def __init__(self, log: Logger) -> None:
        self._log = log
        self._tasks: list[asyncio.Task[None]] = []
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._done)
        self._tasks.append(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self.failed.done():
            self._log.error(
                "task crashed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}"
            )
            self.failed.set_result(exc)

    async def cancel_all(self, timeout: float) -> None:
        """Cancel every task and wait up to `timeout` s; report those that ignored it."""
        for task in self._tasks:
            task.cancel()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        if pending:
            self._log.error(
                "tasks ignored cancellation at shutdown", tasks=[t.get_name() for t in pending]
            )
