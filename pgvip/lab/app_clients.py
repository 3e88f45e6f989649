"""Clients that connect the way applications do, beside the overlapping-attempt sampler; used
by the benchmark client (benchmarks/client.py) and by the lab probe's `--app` writer.

The sampler starts a new attempt every 20 ms even while earlier ones
are pending, so a lost SYN costs it nothing: it measures the VIP's own move. An application
holds a connection (or a pool) and, on an error, reconnects and waits for that connect. These
writers do exactly one thing at a time, every `interval`, never overlapping and never
bursting to catch up:

* `persistent` (model a): one connection; on any error it is dropped and the next attempt
  reconnects at once, with a 1 s connect deadline (enforced here: psycopg raises anything
  below 2 s to 2 s) and a 1 s statement deadline.
* `libpq` (model b): the same with libpq's defaults: no connect timeout, so the kernel's SYN
  retransmits (1 s, 3 s, 7 s, ...) decide; only a 30 s cap lets the run end.
* `pool` (model c): psycopg_pool with 4 connections and its default checkout timeout; every
  statement borrows one.
* `app` reads: a new connection per read (a connection-per-request application), 1 s
  deadline, paced 10-30 ms at random (at exactly 20 ms it would alternate with the sampler
  in lock step and a round-robin balancer would give it the same backend every time); it
  is what shows a balancer still sending connections to a stopped replica.

Each attempt is one JSON line `{"seq", "t", "<path>_ok", "<path>_err", "<path>_ms",
"<path>_node"}` with path `<model>_<target>` (`app_rw`, `libpq_leader`, `pool_rw`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pgvip.lab.samples import classify_error

MODELS = ("persistent", "libpq", "pool")
PATH_PREFIX = {"persistent": "app", "libpq": "libpq", "pool": "pool"}
READ_PREFIX = "app"
CONNECT_DEADLINE = 1.0
LIBPQ_CAP = 30.0  # a libpq-default attempt is abandoned only here, so that the run can end
POOL_SIZE = 4

Target = Callable[[], "tuple[str, int] | None"]  # where to connect now (None: nobody)
Connect = Callable[[str, int, "float | None"], Awaitable[Any]]  # host, port, libpq timeout
Statement = Callable[[Any], Awaitable["str | None"]]  # connection -> node name
Emit = Callable[[dict[str, Any]], None]


class NoTarget(RuntimeError):
    """The direct client has no leader to connect to (Patroni names none right now)."""

    def __str__(self) -> str:
        return "no_leader: Patroni names no leader"


async def _discard(conn: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 0.5)


class Paced:
    """Runs `attempt()` every `interval`, one at a time: after an overrun the next starts at
    once, never a burst; each result becomes one line on `emit`."""

    def __init__(self, path: str, interval: float, emit: Emit, *, jitter: bool = False) -> None:
        self.path, self.interval, self.emit = path, interval, emit
        # A reader paced exactly like the sampler would, behind a round-robin balancer, land
        # on the same backend every time (the two alternate in lock step): jitter it.
        self.jitter = jitter
        self.seq = 0

    async def attempt(self) -> str | None:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what the client holds (its connection or pool)."""

    async def run(self, stop: asyncio.Event, clock: Callable[[], float] = time.monotonic) -> None:
        next_at = clock()
        try:
            while not stop.is_set():
                t = clock()
                try:
                    node, ok, err = await self.attempt(), True, None
                except Exception as exc:
                    node, ok, err = None, False, classify_error(exc)
                p = self.path
                self.emit({
                    "seq": self.seq, "t": round(t, 4), f"{p}_ok": ok, f"{p}_err": err,
                    f"{p}_ms": round((clock() - t) * 1000, 1), f"{p}_node": node,
                })  # fmt: skip
                self.seq += 1
                step = self.interval * (0.5 + random.random()) if self.jitter else self.interval
                next_at = max(next_at + step, clock())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_at - clock()):
                        await stop.wait()
        finally:
            await self.close()


class HeldConnection(Paced):
    """Models a and b (and the per-read connection with `fresh=True`)."""

    def __init__(
        self,
        path: str,
        target: Target,
        connect: Connect,
        statement: Statement,
        *,
        interval: float,
        emit: Emit,
        deadline: float | None,
        fresh: bool = False,
    ) -> None:
        super().__init__(path, interval, emit, jitter=fresh)
        self.target, self.connect, self.statement = target, connect, statement
        self.deadline = deadline  # None: libpq's defaults, bounded only by LIBPQ_CAP
        self.fresh = fresh
        self.conn: Any = None

    async def attempt(self) -> str | None:
        limit = self.deadline if self.deadline is not None else LIBPQ_CAP
        try:
            if self.conn is None:
                where = self.target()
                if where is None:
                    raise NoTarget()
                async with asyncio.timeout(limit):
                    # With a deadline of ours, libpq's own is a backstop (it rounds up to 2 s);
                    # without, libpq's default: no connect timeout at all.
                    self.conn = await self.connect(*where, None if self.deadline is None else 2)
            async with asyncio.timeout(limit):
                node = await self.statement(self.conn)
        except BaseException:
            await self.close()
            raise
        if self.fresh:
            await self.close()
        return node

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await _discard(conn)


class PooledWriter(Paced):
    """Model c: psycopg_pool's AsyncConnectionPool of POOL_SIZE connections."""

    def __init__(
        self, path: str, conninfo: str, statement: Statement, *, interval: float, emit: Emit
    ) -> None:
        super().__init__(path, interval, emit)
        self.conninfo, self.statement = conninfo, statement
        self.pool: Any = None

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            self.conninfo, min_size=POOL_SIZE, max_size=POOL_SIZE,
            kwargs={"autocommit": True}, open=False,
        )  # fmt: skip
        await self.pool.open(wait=True, timeout=30)

    async def attempt(self) -> str | None:
        async with self.pool.connection() as conn:
            return await self.statement(conn)

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 2.0)
