"""The benchmark's client, run inside the lab's client namespace: every --interval it writes
through each contender address, writes straight to the node Patroni's /cluster calls leader
(Patroni's own availability), and optionally reads through RO addresses; one JSON line per sample.

Every attempt has a hard deadline of --timeout enforced here with asyncio, because psycopg (like
libpq) silently raises a connect_timeout of 1 s to 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pgvip.lab.layout import SUPERUSER, SUPERUSER_PASSWORD
from pgvip.lab.probe import LeaderWatch, classify_error, format_sample

TABLE = "pgvip_bench"
NODE_SQL = "current_setting('pgvip.node', true)"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
    "at timestamptz NOT NULL DEFAULT now(), src text NOT NULL, seq bigint NOT NULL)"
)
LEADER = "leader"


class ClientError(ValueError):
    """The client was given settings it cannot run with."""


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    mode: str  # "write" or "read"


def parse_target(text: str, mode: str) -> Target:
    """NAME=HOST:PORT, e.g. rw=10.20.36.50:5432."""
    name, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not name or not host or not port.isdigit():
        raise ClientError(f"--{mode} wants NAME=HOST:PORT, got {text!r}")
    if not name.replace("_", "").replace("-", "").isalnum() or name == LEADER:
        raise ClientError(f"target name {name!r} must be alphanumeric and not {LEADER!r}")
    return Target(name, host, int(port), mode)


@dataclass(frozen=True)
class ClientConfig:
    targets: tuple[Target, ...]
    patroni_urls: tuple[str, ...]
    interval: float = 0.02
    timeout: float = 1.0
    duration: float | None = None
    user: str = SUPERUSER
    password: str = SUPERUSER_PASSWORD
    dbname: str = "postgres"


def config_from_args(argv: Sequence[str] | None = None) -> ClientConfig:
    p = argparse.ArgumentParser(prog="python -m benchmarks.client", description=__doc__)
    p.add_argument("--write", action="append", default=[], metavar="NAME=HOST:PORT")
    p.add_argument("--read", action="append", default=[], metavar="NAME=HOST:PORT")
    p.add_argument("--patroni", action="append", default=[], metavar="URL",
                   help="Patroni REST URL to ask /cluster for the leader (repeatable); "
                        "adds the 'leader' writer")  # fmt: skip
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--duration", type=float)
    args = p.parse_args(argv)
    for name in ("interval", "timeout"):
        value = getattr(args, name)
        if not (value > 0 and math.isfinite(value)):
            raise ClientError(f"--{name} must be a positive number of seconds, got {value}")
    targets = tuple(parse_target(t, "write") for t in args.write) + tuple(
        parse_target(t, "read") for t in args.read
    )
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ClientError(f"target names must be unique, got {names}")
    if not targets and not args.patroni:
        raise ClientError("nothing to do: give --write, --read or --patroni")
    return ClientConfig(targets, tuple(args.patroni), args.interval, args.timeout, args.duration)


class _Pg:
    """Attempts under a hard deadline; a writer keeps one idle connection per address."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.cfg = cfg
        self._idle: dict[tuple[str, int], Any] = {}

    async def _connect(self, host: str, port: int) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            host=host,
            port=port,
            user=self.cfg.user,
            password=self.cfg.password,
            dbname=self.cfg.dbname,
            connect_timeout=max(2, math.ceil(self.cfg.timeout)),  # ours is the real deadline
            sslmode="disable",
            gssencmode="disable",
            application_name="pgvip-bench",
            autocommit=True,
        )

    async def _timed(self, name: str, attempt: Any) -> dict[str, Any]:
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.cfg.timeout):
                node = await attempt()
            ok, err = True, None
        except Exception as exc:
            node, ok, err = None, False, classify_error(exc)
        return {
            f"{name}_ok": ok,
            f"{name}_err": err,
            f"{name}_node": node,
            f"{name}_ms": round((time.monotonic() - start) * 1000, 1),
        }

    async def write(self, name: str, host: str, port: int, seq: int) -> dict[str, Any]:
        key = (host, port)
        conn: Any = self._idle.pop(key, None)

        async def attempt() -> Any:
            nonlocal conn
            if conn is None:
                conn = await self._connect(host, port)
            cur = await conn.execute(
                f"INSERT INTO {TABLE} (src, seq) VALUES (%s, %s) RETURNING {NODE_SQL}",
                (name, seq),
            )
            row = await cur.fetchone()
            return row[0] if row else None

        result = await self._timed(name, attempt)
        if conn is not None:
            if result[f"{name}_ok"] and key not in self._idle:
                self._idle[key] = conn
            else:
                await _discard(conn)
        return result

    async def read(self, name: str, host: str, port: int) -> dict[str, Any]:
        async def attempt() -> Any:
            conn = await self._connect(host, port)
            try:
                cur = await conn.execute(f"SELECT {NODE_SQL}")
                row = await cur.fetchone()
            finally:
                await _discard(conn)
            return row[0] if row else None

        return await self._timed(name, attempt)

    async def close(self) -> None:
        conns, self._idle = list(self._idle.values()), {}
        for conn in conns:
            await _discard(conn)


async def _discard(conn: Any) -> None:
    # A failed connection may sit on a dead peer: never reuse it, never wait long on it.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 0.5)


class Client:
    def __init__(self, cfg: ClientConfig, out: TextIO = sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.pg = _Pg(cfg)
        self.watch = (
            LeaderWatch(cfg.patroni_urls, cfg.interval, cfg.timeout) if cfg.patroni_urls else None
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def sample(self, seq: int, t: float) -> dict[str, Any]:
        line: dict[str, Any] = {"seq": seq, "t": round(t, 4)}
        jobs: list[Awaitable[dict[str, Any]]] = []
        for target in self.cfg.targets:
            if target.mode == "write":
                jobs.append(self.pg.write(target.name, target.host, target.port, seq))
            else:
                jobs.append(self.pg.read(target.name, target.host, target.port))
        if self.watch is not None:
            leader = self.watch.leader
            line[LEADER] = leader[0] if leader else None
            if leader is None:
                line.update({"leader_ok": False, "leader_err": self.watch.error})
            else:
                jobs.append(self.pg.write(LEADER, leader[1], 5432, seq))
        for part in await asyncio.gather(*jobs):
            line.update(part)
        return line

    async def run(self) -> int:
        import psycopg  # noqa: F401  (import before the schedule starts, not inside an attempt)

        if self.watch is not None:
            import aiohttp  # noqa: F401
        watcher = asyncio.create_task(self.watch.run()) if self.watch else None
        pending: asyncio.Queue[asyncio.Task[dict[str, Any]] | None] = asyncio.Queue()
        printer = asyncio.create_task(self._print(pending))
        started = time.monotonic()
        until = None if self.cfg.duration is None else started + self.cfg.duration
        next_due = started
        seq = 0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if until is not None and now >= until:
                    break
                # A sample starts every interval even while earlier ones wait out their deadline,
                # so a recovery shows within one interval.
                pending.put_nowait(asyncio.create_task(self.sample(seq, now)))
                seq += 1
                next_due += self.cfg.interval
                if next_due < now:  # fell behind: skip ahead, never burst
                    next_due = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_due - now))
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
        while True:
            task = await pending.get()
            if task is None:
                return
            line = await task
            try:
                self.out.write(format_sample(line) + "\n")
                self.out.flush()
            except BrokenPipeError:
                self.stop()
                return


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_from_args(argv)
    except ClientError as exc:
        print(f"benchmarks.client: {exc}", file=sys.stderr)
        return 2
    client = Client(cfg)

    async def amain() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, client.stop)
        return await client.run()

    return asyncio.run(amain())


if __name__ == "__main__":
    sys.exit(main())
