"""A lab client that measures what an application sees: writes through the RW VIP, reads
through the RO VIP and, for comparison, writes straight to the node Patroni calls leader.

Run it inside the client namespace (`ip netns exec <prefix>-client python -m pgvip.lab.probe`);
it prints one JSON line per sample. The line format and the gap analysis are pure functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from pgvip.lab.layout import (
    DEFAULT_NODES,
    DEFAULT_SUBNET,
    PG_PORT,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    LabLayout,
    LayoutError,
)

PROBE_TABLE = "pgvip_probe"
# The node-name setting pgvip.lab.render gives each PostgreSQL (NULL where it is not set).
NODE_QUERY = "current_setting('pgvip.node', true)"
TARGETS = ("rw", "ro", "leader")
ERROR_TEXT_MAX = 120


class ProbeError(ValueError):
    """The probe was given settings it cannot run with."""


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
    )


# -- pure parts: errors, lines, leader, gaps ---------------------------------------


def classify_error(exc: BaseException) -> str:
    """A short 'label: detail' for a failed attempt; the label is stable for grouping."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    text = " ".join(str(exc).split())
    lowered = text.lower()
    # What the network said wins over a generic connection-failure SQLSTATE (08xxx).
    network = {
        "connection refused": "refused",
        "no route to host": "unreachable",
        "network is unreachable": "unreachable",
        "connection timed out": "timeout",
        "connection reset": "reset",
    }
    label = next((v for k, v in network.items() if k in lowered), None)
    if label is None:
        label = {
            "25006": "read_only",
            "57P01": "admin_shutdown",
            "57P02": "crash_shutdown",
            "57P03": "cannot_connect_now",
            "28P01": "auth",
            "28000": "auth",
            "08006": "connection",
        }.get(getattr(exc, "sqlstate", None) or "")
    if label is None:
        if "password authentication failed" in lowered:
            label = "auth"
        elif "read-only" in lowered:
            label = "read_only"
        elif "terminating connection" in lowered or "server closed the connection" in lowered:
            label = "connection"
        elif "no leader" in lowered:
            label = "no_leader"
        else:
            label = type(exc).__name__
    detail = text[:ERROR_TEXT_MAX]
    return f"{label}: {detail}" if detail and detail != label else label


def leader_from_cluster(doc: Any) -> tuple[str, str] | None:
    """(name, host) of the running leader in a Patroni /cluster answer, or None."""
    if not isinstance(doc, Mapping):
        return None
    for member in doc.get("members") or ():
        if not isinstance(member, Mapping):
            continue
        if member.get("role") in ("leader", "master", "primary") and member.get("host"):
            return str(member.get("name")), str(member["host"])
    return None


def format_sample(sample: Mapping[str, Any]) -> str:
    """One compact JSON line (no spaces, stable key order)."""
    return json.dumps(sample, separators=(",", ":"), sort_keys=False)


def parse_line(line: str) -> dict[str, Any] | None:
    """A probe output line as a dict; None for anything that is not a sample."""
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or "t" not in doc or "seq" not in doc:
        return None
    return doc


@dataclass(frozen=True)
class Gap:
    """`target` failed from `first_fail` on; `last_ok` and `first_ok` bracket the outage.

    `duration` = first_ok - last_ok: the time between the starts of the last success before
    and the first success after, which overstates the outage by at most one interval.
    `first_ok`/`duration` are None if it never recovered within the samples.
    """

    target: str
    last_ok: float | None
    first_fail: float
    first_ok: float | None
    failures: int

    @property
    def duration(self) -> float | None:
        if self.first_ok is None:
            return None
        start = self.last_ok if self.last_ok is not None else self.first_fail
        return self.first_ok - start

    @property
    def recovered(self) -> bool:
        return self.first_ok is not None


def gaps(
    samples: Iterable[Mapping[str, Any]],
    target: str,
    *,
    since: float | None = None,
    until: float | None = None,
) -> list[Gap]:
    """Outages of `target` ('rw', 'ro' or 'leader') among samples with since <= t < until.

    Samples where the target was not probed (its `<target>_ok` is null) are ignored; the
    samples may come in any order.
    """
    if target not in TARGETS:
        raise ProbeError(f"unknown probe target {target!r}; one of {', '.join(TARGETS)}")
    key = f"{target}_ok"
    rows = sorted(
        (s for s in samples if s.get(key) is not None),
        key=lambda s: float(s["t"]),
    )
    found: list[Gap] = []
    last_ok: float | None = None
    fail_start: float | None = None
    failures = 0
    for s in rows:
        t = float(s["t"])
        if since is not None and t < since:
            # Remember the last success before the window: an outage may straddle `since`.
            if s[key]:
                last_ok, fail_start, failures = t, None, 0
            elif fail_start is None:
                fail_start, failures = t, 1
            else:
                failures += 1
            continue
        if until is not None and t >= until:
            break
        if s[key]:
            if fail_start is not None:
                found.append(Gap(target, last_ok, fail_start, t, failures))
                fail_start, failures = None, 0
            last_ok = t
        elif fail_start is None:
            fail_start, failures = t, 1
        else:
            failures += 1
    if fail_start is not None:
        found.append(Gap(target, last_ok, fail_start, None, failures))
    return found


def longest_gap(gap_list: Sequence[Gap]) -> float | None:
    """The longest recovered outage, 0.0 if there was none, None if one never recovered."""
    if any(not g.recovered for g in gap_list):
        return None
    return max((g.duration or 0.0 for g in gap_list), default=0.0)


# -- I/O: PostgreSQL attempts ------------------------------------------------


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


# -- I/O: who leads ----------------------------------------------------------


class LeaderWatch:
    """Polls Patroni's /cluster (first answering URL wins) every interval."""

    def __init__(self, urls: Sequence[str], interval: float, timeout: float) -> None:
        self.urls = list(urls)
        self.interval = interval
        self.timeout = min(timeout, 0.5)
        self.leader: tuple[str, str] | None = None
        self.error: str | None = "no answer from Patroni yet"
        self._first = 0

    async def run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                started = time.monotonic()
                await self.poll(session)
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def poll(self, session: Any) -> None:
        errors = []
        for i in range(len(self.urls)):
            index = (self._first + i) % len(self.urls)
            url = self.urls[index].rstrip("/") + "/cluster"
            try:
                async with session.get(url) as resp:
                    doc = await resp.json(content_type=None)
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
