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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pgvip.lab.app_clients import (
    CONNECT_DEADLINE,
    MODELS,
    PATH_PREFIX,
    READ_PREFIX,
    HeldConnection,
    Paced,
    PooledWriter,
)
from pgvip.lab.attempts import PgAttempts, SampleLoop
from pgvip.lab.layout import SUPERUSER, SUPERUSER_PASSWORD
from pgvip.lab.samples import format_sample

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
    app_models: tuple[str, ...] = ()  # app_clients.MODELS, for every writer and the leader
    read_app: bool = False  # also a connection-per-read client for every reader


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
    p.add_argument("--app-models", default="", metavar="LIST",
                   help="application-model writers beside the sampler, comma-separated: "
                        + ", ".join(MODELS))  # fmt: skip
    p.add_argument(
        "--read-app",
        action="store_true",
        help="also a connection-per-read client for every --read target",
    )
    args = p.parse_args(argv)
    models = tuple(m for m in args.app_models.split(",") if m)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ClientError(f"unknown --app-models {unknown}; choose from {', '.join(MODELS)}")
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
    return ClientConfig(
        targets, tuple(args.patroni), args.interval, args.timeout, args.duration,
        app_models=models, read_app=args.read_app,
    )  # fmt: skip


class _Pg:
    """The client's statements; each answers which node it reached (`<name>_node`)."""

    def __init__(self, cfg: ClientConfig) -> None:
        self.attempts = PgAttempts(
            user=cfg.user,
            password=cfg.password,
            dbname=cfg.dbname,
            timeout=cfg.timeout,
            application_name="pgvip-bench",
        )

    async def write(self, name: str, host: str, port: int, seq: int) -> dict[str, Any]:
        async def insert(conn: Any) -> dict[str, Any]:
            cur = await conn.execute(
                f"INSERT INTO {TABLE} (src, seq) VALUES (%s, %s) RETURNING {NODE_SQL}",
                (name, seq),
            )
            row = await cur.fetchone()
            return {"node": row[0] if row else None}

        return await self.attempts.write(host, port, name, insert, on_error={"node": None})

    async def read(self, name: str, host: str, port: int) -> dict[str, Any]:
        async def select(conn: Any) -> dict[str, Any]:
            cur = await conn.execute(f"SELECT {NODE_SQL}")
            row = await cur.fetchone()
            return {"node": row[0] if row else None}

        return await self.attempts.read(host, port, name, select, on_error={"node": None})

    async def close(self) -> None:
        await self.attempts.close()


class Client(SampleLoop):
    def __init__(self, cfg: ClientConfig, out: TextIO = sys.stdout) -> None:
        super().__init__(
            interval=cfg.interval,
            duration=cfg.duration,
            count=None,
            pg=_Pg(cfg),
            patroni_urls=cfg.patroni_urls,
            timeout=cfg.timeout,
            out=out,
        )
        self.cfg = cfg

    async def run(self) -> int:
        """The sampler, and beside it the application-model clients (if any)."""
        apps = AppClients(self.cfg, self.watch, self.out)
        pools = apps.build()
        if not apps.clients:
            return await super().run()
        for pool in pools:
            await pool.open()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stop)) for c in apps.clients]
        try:
            return await super().run()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

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


class AppClients:
    """The application-model clients of one run (see pgvip/lab/app_clients.py)."""

    def __init__(self, cfg: ClientConfig, watch: Any, out: TextIO) -> None:
        self.cfg, self.watch, self.out = cfg, watch, out
        self.clients: list[Paced] = []
        self._seq = 0

    def emit(self, line: dict[str, Any]) -> None:
        line["seq"] = self._seq  # one numbering for all app lines, apart from the sampler's
        self._seq += 1
        with contextlib.suppress(BrokenPipeError):
            self.out.write(format_sample(line) + "\n")
            self.out.flush()

    async def connect(self, host: str, port: int, libpq_timeout: float | None) -> Any:
        import psycopg

        extra: dict[str, Any] = (
            {} if libpq_timeout is None else {"connect_timeout": math.ceil(libpq_timeout)}
        )
        return await psycopg.AsyncConnection.connect(
            host=host, port=port, user=self.cfg.user, password=self.cfg.password,
            dbname=self.cfg.dbname, sslmode="disable", gssencmode="disable",
            application_name="pgvip-bench-app", autocommit=True, **extra,
        )  # fmt: skip

    def _conninfo(self, target: Target) -> str:
        c = self.cfg
        return (
            f"host={target.host} port={target.port} user={c.user} password={c.password} "
            f"dbname={c.dbname} sslmode=disable gssencmode=disable connect_timeout=2 "
            "application_name=pgvip-bench-app"
        )

    def build(self) -> list[PooledWriter]:
        """Make the clients; returns the pools, which must be opened before the run."""
        cfg, pools = self.cfg, []
        writers = [t for t in cfg.targets if t.mode == "write"]
        for model in cfg.app_models:
            deadline = None if model == "libpq" else CONNECT_DEADLINE
            prefix = PATH_PREFIX[model]
            for t in writers:
                if model == "pool":
                    pool = PooledWriter(f"{prefix}_{t.name}", self._conninfo(t), _insert(t.name),
                                        interval=cfg.interval, emit=self.emit)  # fmt: skip
                    pools.append(pool)
                    self.clients.append(pool)
                    continue
                self.clients.append(HeldConnection(
                    f"{prefix}_{t.name}", _fixed(t), self.connect, _insert(t.name),
                    interval=cfg.interval, emit=self.emit, deadline=deadline,
                ))  # fmt: skip
            if self.watch is not None and model != "pool":
                # The same client following Patroni's leader directly: the reference.
                self.clients.append(HeldConnection(
                    f"{prefix}_{LEADER}", self._leader, self.connect, _insert(LEADER),
                    interval=cfg.interval, emit=self.emit, deadline=deadline,
                ))  # fmt: skip
        if cfg.read_app:
            for t in cfg.targets:
                if t.mode == "read":
                    self.clients.append(HeldConnection(
                        f"{READ_PREFIX}_{t.name}", _fixed(t), self.connect, _select,
                        interval=cfg.interval, emit=self.emit, deadline=CONNECT_DEADLINE,
                        fresh=True,
                    ))  # fmt: skip
        return pools

    def _leader(self) -> tuple[str, int] | None:
        leader = self.watch.leader if self.watch is not None else None
        return None if leader is None else (leader[1], 5432)


def _fixed(t: Target) -> Callable[[], tuple[str, int] | None]:
    return lambda: (t.host, t.port)


def _insert(name: str) -> Callable[[Any], Awaitable[str | None]]:
    async def run(conn: Any) -> str | None:
        cur = await conn.execute(
            f"INSERT INTO {TABLE} (src, seq) VALUES (%s, 0) RETURNING {NODE_SQL}", (f"app-{name}",)
        )
        row = await cur.fetchone()
        return row[0] if row else None

    return run


async def _select(conn: Any) -> str | None:
    cur = await conn.execute(f"SELECT {NODE_SQL}")
    row = await cur.fetchone()
    return row[0] if row else None


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
