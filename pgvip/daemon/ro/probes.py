"""What the RO director reads: `/cluster` (the membership, `ClusterReader`) and, per replica,
its own REST API's `/replica?lag=`, with ro.probe_sql a SQL `pg_is_in_recovery()`, and with
ro.port_check_interval a connect to its port (`port_check`); each bounded by ro.probe_timeout."""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pgvip.daemon.log_throttle import ErrorLogThrottle
from pgvip.daemon.ro.port_check import check_port
from pgvip.patroni.client import PatroniClient
from pgvip.patroni.cluster import ClusterParseError, ClusterView, Member, parse_cluster
from pgvip.patroni.verdict import PatroniError, PatroniUnavailable, Verdict
from pgvip.policy.backends import DEFAULT_PORT, ProbeResult

__all__ = [
    "SQL_DBNAME",
    "ClusterReader",
    "SqlProbe",
    "probe_http",
    "probe_members",
    "probe_sql",
    "psycopg_probe",
]

SQL_DBNAME = "postgres"
# How long one /cluster request may stay open: longer than Patroni's DCS retries (its
# retry_timeout, 10 s by default), after which Patroni answers (or fails) on its own.
CLUSTER_PATIENCE = 60.0

SqlProbe = Callable[[str, str, int, float], Awaitable[ProbeResult]]
"""(member, host, port, timeout) -> a ProbeResult of kind "sql"; the caller also bounds it."""


async def psycopg_probe(
    member: str,
    host: str,
    port: int,
    timeout: float,
    *,
    now_fn: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """Connect to one backend and ask `SELECT pg_is_in_recovery()`: ok only for a standby.

    Credentials come from libpq's environment (PGUSER, PGPASSFILE / ~/.pgpass, PGSSLMODE, ...);
    the database is PGDATABASE if set, else "postgres". libpq raises connect_timeout below 2 s
    to 2 s, so the caller must bound the whole probe itself (the Director does).
    """
    # Imported here: psycopg costs ~10 MiB RSS, and most nodes never enable probe_sql.
    import psycopg

    target = f"{host}:{port}"
    params: dict[str, Any] = {
        "host": host,
        "port": port,
        "connect_timeout": max(2, math.ceil(timeout)),
        "application_name": "pgvip-probe",
        "autocommit": True,
    }
    if "PGDATABASE" not in os.environ:
        params["dbname"] = SQL_DBNAME
    try:
        conn = await psycopg.AsyncConnection.connect(**params)
    except psycopg.Error as exc:
        return ProbeResult(
            member, False, f"SQL: {target}: {_first_line(exc)}", now_fn(), kind="sql",
            definitive=_refused(exc),
        )  # fmt: skip
    try:
        async with conn:
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            row = await cur.fetchone()
    except psycopg.Error as exc:
        return ProbeResult(
            member, False, f"SQL: {target}: {_first_line(exc)}", now_fn(), kind="sql"
        )
    if row is None or row[0] is not True:
        return ProbeResult(
            member, False, f"SQL: {target} is not in recovery (a primary)", now_fn(), kind="sql",
            definitive=True,
        )  # fmt: skip
    return ProbeResult(member, True, f"SQL: {target} in recovery", now_fn(), kind="sql")


def _refused(exc: BaseException) -> bool:
    """Nothing listens, or PostgreSQL says it is shutting down or starting: not a doubt."""
    if getattr(exc, "sqlstate", None) in ("57P01", "57P02", "57P03"):
        return True
    return "connection refused" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class ClusterReader:
    """Reads `/cluster` from the local Patroni; a bad answer keeps the last good view, and
    each change of problem is logged once (with how many polls repeated the previous one).

    One request at a time: Patroni answers `/cluster` from its DCS, and without the DCS each
    request blocks one of its few REST workers (`restapi.thread_pool_size`, 5) for the DCS
    retry. Abandoned at our timeout and asked again every poll, they filled the pool, and
    then the leader's `POST /failsafe` to this node timed out, so failsafe_mode could not
    keep the leader through an etcd outage. So a request that is not answered within the
    client's timeout is kept open (up to `patience` seconds) and awaited again by the next
    polls instead of being asked anew; meanwhile the last good view is used."""

    def __init__(
        self, client: PatroniClient, *, log: Any, patience: float = CLUSTER_PATIENCE
    ) -> None:
        self._client = client
        self._log = log
        self._throttle = ErrorLogThrottle()
        self.view: ClusterView | None = None  # the last good answer (None: none this term)
        self.error: str | None = None  # None while /cluster answers well
        self.errors = 0
        self.patience = patience
        self._pending: asyncio.Future[dict[str, Any]] | None = None
        self.still_open = 0  # polls that found the previous request unanswered, not re-asked

    async def _answer(self) -> dict[str, Any]:
        """The answer to the one open request (asked now if none is open), awaited for at
        most the client's timeout; the request itself stays open for `patience`."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._client.cluster(timeout=self.patience))
            # Retrieved here if nobody reads it (shutdown): no "never retrieved" warning.
            self._pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        elif not self._pending.done():
            self.still_open += 1
        pending = self._pending
        done, _ = await asyncio.wait({pending}, timeout=self._client.timeout)
        if not done:
            wait = self._client.timeout
            raise PatroniUnavailable(f"/cluster unanswered after {wait:g} s (still open, "
                                     "not asked again until it is)", "timeout")  # fmt: skip
        self._pending = None
        return pending.result()

    async def read(self) -> ClusterView | None:
        """The fresh view, or the last good one (logged once per change of problem)."""
        try:
            view = parse_cluster(await self._answer())
        except PatroniUnavailable as exc:
            return self._failed(exc.cause, f"no /cluster answer: {exc.reason}")
        except PatroniError as exc:
            return self._failed("invalid", f"garbage /cluster answer: {exc}")
        except ClusterParseError as exc:
            return self._failed("invalid", f"garbage /cluster answer: {exc.reason}")
        decision = self._throttle.observe("ok", "")
        if self.error is not None and decision.log:
            self._log.info(
                "/cluster answering again",
                previous=self.error,
                failed_polls=decision.suppressed + 1,
            )
        self.error = None
        self.view = view
        return view

    def _failed(self, cause: str, reason: str) -> ClusterView | None:
        self.errors += 1
        self.error = reason
        decision = self._throttle.observe(cause, reason)
        if decision.log:
            kept = (
                f"keeping the last good set of {len(self.view.members)} member(s)"
                if self.view is not None
                else "no good /cluster yet: nothing to balance"
            )
            self._log.warning(
                "RO director: " + reason,
                cause=cause,
                action=kept,
                repeats_of_previous=decision.suppressed,
            )
        return self.view


async def probe_members(
    view: ClusterView,
    client: PatroniClient,
    *,
    max_lag: int,
    timeout: float,
    sql_probe: SqlProbe | None,
    clock: Callable[[], float],
    port_check: bool = False,
) -> list[ProbeResult]:
    """Probe every candidate of `view` concurrently: each replica's `/replica` (and SQL, and
    a connect to its PostgreSQL port)."""
    coros: list[Awaitable[ProbeResult]] = []
    for m in view.members:
        # Only replicas can be backends; the leader is judged from /cluster alone.
        if not m.is_replica or m.noloadbalance:
            continue
        coros.append(probe_http(client, m, max_lag=max_lag, timeout=timeout, clock=clock))
        if sql_probe is not None:
            coros.append(probe_sql(sql_probe, m, timeout=timeout, clock=clock))
        if port_check and m.host:
            port = m.port or DEFAULT_PORT
            coros.append(check_port(m.name, m.host, port, timeout=timeout, clock=clock))
    return list(await asyncio.gather(*coros))


async def probe_http(
    client: PatroniClient,
    m: Member,
    *,
    max_lag: int,
    timeout: float,
    clock: Callable[[], float],
) -> ProbeResult:
    """The member's own `/replica?lag=<max_lag>`: ok for a running replica within the lag."""
    if not m.api_url:
        return ProbeResult(m.name, False, "no api_url in /cluster", clock())
    try:
        async with asyncio.timeout(timeout):
            obs = await client.member_replica(m.api_url, max_lag, now_fn=clock)
    except TimeoutError:
        reason = f"timeout after {timeout:g} s: {m.api_url} /replica"
        return ProbeResult(m.name, False, reason, clock())
    reason = obs.reason
    if obs.verdict is Verdict.NO:
        reason += f" (not a running replica within lag {max_lag} B)"
    # Its own "no", or nothing listening: Patroni stopped or stopping. Not a timeout.
    definitive = obs.verdict is Verdict.NO or obs.cause == "refused"
    return ProbeResult(m.name, obs.verdict is Verdict.YES, reason, obs.at, definitive=definitive)


async def probe_sql(
    sql_probe: SqlProbe,
    m: Member,
    *,
    timeout: float,
    clock: Callable[[], float],
) -> ProbeResult:
    """`sql_probe` on the member's PostgreSQL address, bounded by `timeout` as a whole."""
    if not m.host:
        return ProbeResult(m.name, False, "SQL: no host in /cluster", clock(), kind="sql")
    port = m.port or DEFAULT_PORT
    try:
        async with asyncio.timeout(timeout):
            return await sql_probe(m.name, m.host, port, timeout)
    except TimeoutError:
        reason = f"SQL: timeout after {timeout:g} s: {m.host}:{port}"
        return ProbeResult(m.name, False, reason, clock(), kind="sql")
