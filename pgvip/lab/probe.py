"""A lab client that measures what an application sees: writes through the RW VIP, reads
through the RO VIP and, for comparison, writes straight to the node Patroni calls leader.

Run it inside the client namespace (`ip netns exec <prefix>-client python -m pgvip.lab.probe`);
it prints one JSON line per sample. The line format and the gap analysis live in
pgvip.lab.samples, the timed attempts and the sampling loop in pgvip.lab.attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from pgvip.lab.app_clients import CONNECT_DEADLINE, HeldConnection
from pgvip.lab.attempts import PgAttempts, SampleLoop
from pgvip.lab.layout import (
    DEFAULT_NODES,
    DEFAULT_SUBNET,
    PG_PORT,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    LabLayout,
    LayoutError,
)
from pgvip.lab.samples import TARGETS, ProbeError, format_sample

PROBE_TABLE = "pgvip_probe"
# The node-name setting pgvip.lab.render gives each PostgreSQL (NULL where it is not set).
NODE_QUERY = "current_setting('pgvip.node', true)"


# -- settings --------------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig:
    rw: str | None  # host of the RW VIP, None: do not probe it
    ro: str | None
    patroni_urls: tuple[str, ...]  # where to ask who leads; empty: no leader writes
    interval: float = 0.1
    timeout: float = 1.0
    port: int = PG_PORT
    user: str = SUPERUSER
    password: str = SUPERUSER_PASSWORD
    dbname: str = "postgres"
    count: int | None = None
    duration: float | None = None
    names: Mapping[str, str] = field(default_factory=dict)  # server address -> node name
    app: bool = False  # also the application-model writer and its twin (APP_TARGETS)


_PROG = "python -m pgvip.lab.probe"


@click.command(
    name=_PROG,
    help="Write through the RW VIP, read through the RO VIP, and write to Patroni's "
    "leader, every --interval seconds; one JSON line per sample on stdout.",
)
@click.option("--subnet", default=DEFAULT_SUBNET, show_default=True, help="lab subnet")
@click.option("--nodes", type=int, default=DEFAULT_NODES, show_default=True, help="lab nodes")
@click.option("--rw", help="RW address (default: the lab's .50)")
@click.option("--ro", help="RO address (default: the lab's .49)")
@click.option("--no-rw", is_flag=True, help="do not write through the RW VIP")
@click.option("--no-ro", is_flag=True, help="do not read through the RO VIP")
@click.option(
    "--leader", is_flag=True, help="also write straight to the node Patroni's /cluster names leader"
)
@click.option(
    "--patroni",
    multiple=True,
    metavar="URL",
    help="Patroni REST URL to ask for the leader (repeatable; default: every lab node)",
)
@click.option("--interval", type=float, default=0.1, help="seconds between samples")
@click.option("--timeout", type=float, default=1.0, help="hard limit per attempt, seconds")
@click.option("--port", type=int, default=PG_PORT)
@click.option("--user", default=SUPERUSER)
@click.option("--password", default=SUPERUSER_PASSWORD)
@click.option("--dbname", default="postgres")
@click.option(
    "--app",
    is_flag=True,
    help="also write as an application does: one connection through the RW VIP, reconnected "
    "at once with a 1 s connect deadline, one INSERT per --interval, and the same client "
    'following Patroni\'s leader directly (with --leader); lines marked "client": "app"',
)
@click.option("--count", type=int, help="stop after this many samples")
@click.option("--duration", type=float, help="stop after this many seconds")
def _command(**options: Any) -> ProbeConfig:
    return _config(**options)


def config_from_args(argv: Sequence[str] | None = None) -> ProbeConfig:
    """Parse the command line; raises ProbeError with a one-line reason. `--help` prints
    the help and exits 0."""
    try:
        result = _command.main(
            args=list(argv) if argv is not None else None, prog_name=_PROG, standalone_mode=False
        )
    except click.UsageError as exc:
        raise ProbeError(exc.format_message()) from exc
    if not isinstance(result, ProbeConfig):  # --help: click printed it and returned 0
        raise SystemExit(result or 0)
    return result


def _config(
    *,
    subnet: str,
    nodes: int,
    rw: str | None,
    ro: str | None,
    no_rw: bool,
    no_ro: bool,
    leader: bool,
    patroni: tuple[str, ...],
    interval: float,
    timeout: float,
    port: int,
    user: str,
    password: str,
    dbname: str,
    count: int | None,
    duration: float | None,
    app: bool = False,
) -> ProbeConfig:
    try:
        layout = LabLayout.create(subnet=subnet, nodes=nodes)
    except LayoutError as exc:
        raise ProbeError(str(exc)) from exc
    if not (interval > 0 and math.isfinite(interval)):
        raise ProbeError(f"--interval must be a positive number of seconds, got {interval}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ProbeError(f"--timeout must be a positive number of seconds, got {timeout}")
    if count is not None and count < 1:
        raise ProbeError(f"--count must be at least 1, got {count}")
    if duration is not None and not duration > 0:
        raise ProbeError(f"--duration must be positive, got {duration}")
    rw_target = None if no_rw else (rw or str(layout.rw_vip))
    ro_target = None if no_ro else (ro or str(layout.ro_vip))
    urls: tuple[str, ...] = ()
    if leader:
        urls = tuple(patroni or [layout.patroni_url(n) for n in layout.node_names()])
    if rw_target is None and ro_target is None and not urls:
        raise ProbeError("nothing to probe: --no-rw and --no-ro without --leader")
    names = {str(layout.node_ip(n)): n for n in layout.node_names()}
    return ProbeConfig(
        rw=rw_target,
        ro=ro_target,
        patroni_urls=urls,
        interval=interval,
        timeout=timeout,
        port=port,
        user=user,
        password=password,
        dbname=dbname,
        count=count,
        duration=duration,
        names=names,
        app=app,
    )


class _Pg:
    """The probe's statements: an INSERT through the RW VIP (and to the leader), a SELECT
    through the RO VIP; both say which server answered."""

    def __init__(self, cfg: ProbeConfig) -> None:
        self.attempts = PgAttempts(
            user=cfg.user,
            password=cfg.password,
            dbname=cfg.dbname,
            timeout=cfg.timeout,
            application_name="pgvip-probe",
        )
        self.port = cfg.port
        self._table_ready = False

    async def write(self, host: str, prefix: str, seq: int) -> dict[str, Any]:
        """INSERT one row through `host`, reusing an idle connection when there is one."""

        async def insert(conn: Any) -> dict[str, Any]:
            if not self._table_ready:
                await self._ensure_table(conn)
            cur = await conn.execute(
                f"INSERT INTO {PROBE_TABLE} (src, seq) VALUES (%s, %s) "
                f"RETURNING host(inet_server_addr()), {NODE_QUERY}",
                (prefix, seq),
            )
            row = await cur.fetchone()
            return {"server": row[0] if row else None, "node": row[1] if row else None}

        return await self.attempts.write(host, self.port, prefix, insert)

    async def read(self, host: str, prefix: str) -> dict[str, Any]:
        """A fresh connection per read, so the balancer's choice shows in inet_server_addr()."""

        async def select(conn: Any) -> dict[str, Any]:
            cur = await conn.execute(
                f"SELECT host(inet_server_addr()), {NODE_QUERY}, pg_is_in_recovery()"
            )
            row = await cur.fetchone()
            if row is None:
                return {"server": None, "node": None, "replica": None}
            return {"server": row[0], "node": row[1], "replica": row[2]}

        return await self.attempts.read(host, self.port, prefix, select)

    def app_insert(self, prefix: str) -> Callable[[Any], Awaitable[str | None]]:
        """The application-model writer's statement: one INSERT, answering the node's name."""

        async def insert(conn: Any) -> str | None:
            if not self._table_ready:
                await self._ensure_table(conn)
            cur = await conn.execute(
                f"INSERT INTO {PROBE_TABLE} (src, seq) VALUES (%s, 0) RETURNING {NODE_QUERY}",
                (prefix,),
            )
            row = await cur.fetchone()
            return row[0] if row else None

        return insert

    async def _ensure_table(self, conn: Any) -> None:
        import psycopg

        # Two writers racing on CREATE TABLE IF NOT EXISTS collide in pg_type: it exists then.
        with contextlib.suppress(psycopg.errors.UniqueViolation):
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} ("
                "id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), "
                "src text NOT NULL, seq bigint NOT NULL)"
            )
        self._table_ready = True

    async def close(self) -> None:
        await self.attempts.close()


class Probe(SampleLoop):
    def __init__(self, cfg: ProbeConfig, out: TextIO = sys.stdout) -> None:
        super().__init__(
            interval=cfg.interval,
            duration=cfg.duration,
            count=cfg.count,
            pg=_Pg(cfg),
            patroni_urls=cfg.patroni_urls,
            timeout=cfg.timeout,
            out=out,
        )
        self.cfg = cfg

    async def run(self) -> int:
        if not self.cfg.app or self.cfg.rw is None:
            return await super().run()
        stop = asyncio.Event()
        pg = self.pg.attempts

        async def connect(host: str, port: int, _libpq_timeout: float | None) -> Any:
            return await pg.connect(host, port)

        def leader() -> tuple[str, int] | None:
            found = self.watch.leader if self.watch is not None else None
            return None if found is None else (found[1], self.cfg.port)

        rw = (self.cfg.rw, self.cfg.port)
        targets: list[tuple[str, Callable[[], tuple[str, int] | None]]] = [("app_rw", lambda: rw)]
        if self.watch is not None:
            targets.append(("app_leader", leader))
        clients = [
            HeldConnection(
                path,
                where,
                connect,
                self.pg.app_insert(path),
                interval=self.cfg.interval,
                emit=self._emit_app,
                deadline=CONNECT_DEADLINE,
            )  # fmt: skip
            for path, where in targets
        ]
        tasks = [asyncio.create_task(c.run(stop)) for c in clients]
        try:
            return await super().run()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _emit_app(self, line: dict[str, Any]) -> None:
        if self.broken_pipe:
            return
        try:
            self.out.write(format_sample({**line, "client": "app"}) + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.broken_pipe = True
            self.stop()

    async def sample(self, seq: int, t: float | None = None) -> dict[str, Any]:
        """One sample; `t` is its scheduled monotonic time (now by default)."""
        if t is None:
            t = time.monotonic()
        wall = time.time() - (time.monotonic() - t)
        line: dict[str, Any] = {"seq": seq, "t": round(t, 4), "wall": round(wall, 4)}
        jobs: list[Awaitable[dict[str, Any]]] = []
        if self.cfg.rw:
            jobs.append(self.pg.write(self.cfg.rw, "rw", seq))
        else:
            line["rw_ok"] = None
        if self.cfg.ro:
            jobs.append(self.pg.read(self.cfg.ro, "ro"))
        else:
            line["ro_ok"] = None
        if self.watch is not None:
            leader = self.watch.leader
            line["leader"] = leader[0] if leader else None
            if leader is None:
                line.update({"leader_ok": False, "leader_err": self.watch.error, "leader_ms": 0.0})
            else:
                jobs.append(self.pg.write(leader[1], "leader", seq))
        else:
            line["leader"] = None
            line["leader_ok"] = None
        for part in await asyncio.gather(*jobs):
            line.update(part)
        for target in TARGETS:
            # Nodes rendered by pgvip.lab.render name themselves; otherwise go by address
            # (which, through a VIP, is the VIP: then the node stays unknown).
            server = line.get(f"{target}_server")
            if server is not None and not line.get(f"{target}_node"):
                line[f"{target}_node"] = self.cfg.names.get(server)
        return line


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = config_from_args(argv)
    except ProbeError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2

    probe = Probe(cfg)

    async def amain() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, probe.stop)
        return await probe.run()

    code = asyncio.run(amain())
    if probe.broken_pipe:
        # Python flushes stdout once more at exit; point it at /dev/null so that is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return code


if __name__ == "__main__":
    sys.exit(main())
