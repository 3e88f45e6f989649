"""The benchmark's client, run inside the lab's client namespace: every --interval it writes
through each contender address, writes straight to the node Patroni's /cluster calls leader
(Patroni's own availability), and optionally reads through RO addresses; one JSON line per sample.

Every attempt has a hard deadline of --timeout enforced here with asyncio, because psycopg (like
libpq) silently raises a connect_timeout of 1 s to 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from pgvip.lab.attempts import PgAttempts, SampleLoop
from pgvip.lab.layout import SUPERUSER, SUPERUSER_PASSWORD

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
