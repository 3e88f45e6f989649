"""Timed PostgreSQL attempts, a Patroni leader watch and the sampling loop, shared by the lab
probe (pgvip.lab.probe) and the benchmark client (benchmarks/client.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TextIO

from pgvip.lab.samples import classify_error, format_sample, leader_from_cluster


async def _discard(conn: Any) -> None:
    # A connection whose attempt failed or timed out may sit on a dead peer: never reuse it,
    # and never let its close block the probe.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 0.5)


Statement = Callable[[Any], Awaitable[dict[str, Any]]]  # connection -> fields of the line


class PgAttempts:
    """psycopg attempts, each under a hard asyncio deadline (psycopg, like libpq, raises any
    connect_timeout below 2 s to 2 s). A writer keeps one idle connection per address; a
    reader connects afresh every time, so a balancer's choice shows. Shared by this probe and
    the benchmark client (benchmarks/client.py)."""

    def __init__(
        self, *, user: str, password: str, dbname: str, timeout: float, application_name: str
    ) -> None:
        self.user = user
        self.password = password
        self.dbname = dbname
        self.timeout = timeout
        self.application_name = application_name
        self._idle: dict[tuple[str, int], Any] = {}

    async def connect(self, host: str, port: int) -> Any:
        import psycopg  # only the client processes pay for psycopg

        return await psycopg.AsyncConnection.connect(
            host=host,
            port=port,
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            # psycopg raises anything below 2 s to 2 s; the real deadline is ours (asyncio).
            connect_timeout=max(2, math.ceil(self.timeout)),
            # No SSL/GSS negotiation round trips: the lab has neither.
            sslmode="disable",
            gssencmode="disable",
            application_name=self.application_name,
            autocommit=True,
        )

    async def timed(
        self,
        prefix: str,
        attempt: Callable[[], Awaitable[dict[str, Any]]],
        on_error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`prefix_ok`, `prefix_err`, `prefix_ms`, and `prefix_<key>` for each field the attempt
        returned (or for each of `on_error` when it failed)."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                result = await attempt()
            ok, err = True, None
        except Exception as exc:
            result, ok, err = dict(on_error or {}), False, classify_error(exc)
        out = {
            f"{prefix}_ok": ok,
            f"{prefix}_err": err,
            f"{prefix}_ms": round((time.monotonic() - start) * 1000, 1),
        }
        out.update({f"{prefix}_{k}": v for k, v in result.items()})
        return out

    async def write(
        self,
        host: str,
        port: int,
        prefix: str,
        statement: Statement,
        on_error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run `statement` on the idle connection to host:port, or on a new one; keep the
        connection only if the attempt succeeded."""
        key = (host, port)
        conn: Any = self._idle.pop(key, None)

        async def attempt() -> dict[str, Any]:
            nonlocal conn
            if conn is None:
                conn = await self.connect(host, port)
            return await statement(conn)

        result = await self.timed(prefix, attempt, on_error)
        if conn is not None:
            if result[f"{prefix}_ok"] and key not in self._idle:
                self._idle[key] = conn
            else:
                await _discard(conn)
        return result

    async def read(
        self,
        host: str,
        port: int,
        prefix: str,
        statement: Statement,
        on_error: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run `statement` on a fresh connection to host:port, closed afterwards."""

        async def attempt() -> dict[str, Any]:
            conn = await self.connect(host, port)
            try:
                return await statement(conn)
            finally:
                await _discard(conn)

        return await self.timed(prefix, attempt, on_error)

    async def close(self) -> None:
        conns, self._idle = list(self._idle.values()), {}
        for conn in conns:
            await _discard(conn)


class LeaderWatch:
    """Polls Patroni's /cluster (first answering URL wins) every interval.

    At most one request per URL is open at a time: without its DCS, Patroni blocks a REST
    worker per /cluster for the DCS retry, and requests abandoned at our timeout and asked
    again filled its pool of five, which starved the leader's `POST /failsafe` (the observer
    broke what it observed). A request not answered within `timeout` stays open (up to
    PATIENCE) and is awaited again by the next polls instead of being asked anew."""

    PATIENCE = 60.0

    def __init__(self, urls: Sequence[str], interval: float, timeout: float) -> None:
        self.urls = list(urls)
        self.interval = interval
        self.timeout = min(timeout, 0.5)
        self.leader: tuple[str, str] | None = None
        self.error: str | None = "no answer from Patroni yet"
        self._first = 0
        self._open: dict[str, asyncio.Future[Any]] = {}

    async def run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.PATIENCE)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                while True:
                    started = time.monotonic()
                    await self.poll(session)
                    await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
            finally:
                for f in self._open.values():
                    f.cancel()

    @staticmethod
    async def _get(session: Any, url: str) -> Any:
        async with session.get(url) as resp:
            return await resp.json(content_type=None)

    async def poll(self, session: Any) -> None:
        errors = []
        for i in range(len(self.urls)):
            index = (self._first + i) % len(self.urls)
            url = self.urls[index].rstrip("/") + "/cluster"
            pending = self._open.get(url)
            if pending is None:
                pending = self._open[url] = asyncio.ensure_future(self._get(session, url))
            done, _ = await asyncio.wait({pending}, timeout=self.timeout)
            if not done:
                errors.append(f"{url}: timeout (still open, not asked again)")
                continue
            del self._open[url]
            try:
                doc = pending.result()
            except Exception as exc:
                errors.append(f"{url}: {classify_error(exc)}")
                continue
            self._first = index  # stick with a node that answers
            self.leader = leader_from_cluster(doc)
            self.error = None if self.leader else "no_leader: /cluster names no leader"
            return
        self.leader = None
        self.error = "no Patroni answered: " + "; ".join(errors)


# -- the sampling loop -------------------------------------------------------


class SampleLoop:
    """Starts `sample(seq, t)` every `interval` seconds and prints each line, in order of seq,
    as one JSON line. Samples overlap during an outage: one starts every interval even while
    earlier ones still wait out their deadline, so a recovery shows within one interval.
    Subclasses (the probe, the benchmark client) say what a sample is."""

    def __init__(
        self,
        *,
        interval: float,
        duration: float | None,
        count: int | None,
        pg: Any,
        patroni_urls: Sequence[str],
        timeout: float,
        out: TextIO,
    ) -> None:
        self.interval = interval
        self.duration = duration
        self.count = count
        self.pg = pg  # has `async close()`
        # Who leads, for the writes straight to the leader; None: no leader writes.
        self.watch = LeaderWatch(patroni_urls, interval, timeout) if patroni_urls else None
        self.out = out
        self._stop = asyncio.Event()
        self.broken_pipe = False

    def stop(self) -> None:
        self._stop.set()

    async def sample(self, seq: int, t: float) -> dict[str, Any]:
        raise NotImplementedError

    async def run(self) -> int:
        # Import now: a first import inside an attempt would stall the loop and the schedule.
        import psycopg  # noqa: F401

        if self.watch is not None:
            import aiohttp  # noqa: F401

        watcher = asyncio.create_task(self.watch.run()) if self.watch else None
        pending: asyncio.Queue[asyncio.Task[dict[str, Any]] | None] = asyncio.Queue()
        printer = asyncio.create_task(self._print(pending))
        started = time.monotonic()
        until = None if self.duration is None else started + self.duration
        next_due = started
        seq = 0
        try:
            while not self._stop.is_set():
                if self.count is not None and seq >= self.count:
                    break
                if until is not None and time.monotonic() >= until:
                    break
                pending.put_nowait(asyncio.create_task(self.sample(seq, time.monotonic())))
                seq += 1
                next_due += self.interval
                now = time.monotonic()
                if next_due < now:  # fell behind (a slow machine): skip, never burst
                    next_due = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), next_due - now)
        finally:
            pending.put_nowait(None)
            await printer
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await self.pg.close()
        return 0

    async def _print(self, pending: asyncio.Queue[asyncio.Task[dict[str, Any]] | None]) -> None:
        # In order of seq: a line waits for its slowest attempt (at most the timeout).
        while True:
            task = await pending.get()
            if task is None:
                return
            line = await task
            if self.broken_pipe:
                continue  # drain the attempts still in flight
            try:
                self.out.write(format_sample(line) + "\n")
                self.out.flush()
            except BrokenPipeError:
                # The reader went away (the demo ended): stop quietly.
                self.broken_pipe = True
                self.stop()
