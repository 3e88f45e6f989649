"""The RO director: while this node's RO VRRP instance is MASTER it reads `/cluster`, probes every
replica and programs the load balancer; otherwise it keeps the balancer empty and, for "dr"
forwarding, keeps the RO VIP on `lo` so this node can be a real server of whoever directs."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol, cast

from pgvip.config import RoConfig
from pgvip.daemon.log_throttle import ErrorLogThrottle
from pgvip.dataplane.ipvs import setup_real_server, teardown_real_server
from pgvip.dataplane.loadbalancer import IPAddress, LoadBalancer, VirtualService, virtual_service
from pgvip.patroni.client import PatroniClient
from pgvip.patroni.cluster import ClusterParseError, ClusterView, Member, parse_cluster
from pgvip.patroni.verdict import PatroniError, PatroniUnavailable, Verdict
from pgvip.policy.backends import (
    DEFAULT_PORT,
    BackendPolicy,
    BackendSet,
    BackendSettings,
    ProbeResult,
)
from pgvip.status import RoInfo
from pgvip.vrrp.actions import Transition
from pgvip.vrrp.states import State

__all__ = [
    "Director",
    "DirectorBackend",
    "DirectorError",
    "DirectorStatus",
    "RealServerHooks",
    "SqlProbe",
    "psycopg_probe",
]

# Re-apply an unchanged RO service this often (apply() reads the kernel back, so drift
# heals); also the standby cycle's cadence. Not the VIP address reconcile interval.
RO_REAPPLY_INTERVAL = 5.0
# A new director probes `rise` rounds this far apart before its first apply, so that taking
# over does not pass through "no healthy replica" (fallback) for rise x poll_interval.
WARMUP_SPACING = 0.1
SQL_DBNAME = "postgres"

SqlProbe = Callable[[str, str, int, float], Awaitable[ProbeResult]]
"""(member, host, port, timeout) -> a ProbeResult of kind "sql"; the caller also bounds it."""


class DirectorError(RuntimeError):
    """The director cannot be built from these settings (e.g. ro.vip is not set)."""


class RealServerHooks(Protocol):
    """How a non-director becomes a DR real server for the RO VIP (VIP on lo, ARP hidden)."""

    async def setup(self, vip: IPAddress) -> bool: ...  # True if the VIP was added now

    async def teardown(self, vip: IPAddress) -> bool: ...  # True if it was removed now


class LoopbackRealServer:
    """The real RealServerHooks: `pgvip.dataplane.ipvs.setup_real_server` and its teardown."""

    def __init__(self, *, interface: str | None = None, netns: str | None = None) -> None:
        self.interface = interface
        self.netns = netns

    async def setup(self, vip: IPAddress) -> bool:
        return await setup_real_server(vip, netns=self.netns, interface=self.interface)

    async def teardown(self, vip: IPAddress) -> bool:
        return await teardown_real_server(vip, netns=self.netns)


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
            member, False, f"SQL: {target}: {_first_line(exc)}", now_fn(), kind="sql"
        )
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
            member, False, f"SQL: {target} is not in recovery (a primary)", now_fn(), kind="sql"
        )
    return ProbeResult(member, True, f"SQL: {target} in recovery", now_fn(), kind="sql")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class DirectorBackend:
    """One member as the status API shows it (`pgvip.status.BackendInfo`)."""

    member: str
    state: str  # active, draining, down, excluded, leader (BackendPolicy.explain())
    reason: str
    address: str | None
    port: int | None  # in the service, else the member's own from /cluster
    weight: int  # in the service (0 while draining or when not in it)
    healthy: bool  # it gets new connections
    lag: int | None  # bytes, from /cluster
    last_probe_at: float | None  # wall clock of the newest probe answer; None if not probed
    last_error: str | None  # the failed probe of the latest round; None if that round was good


@dataclass(frozen=True)
class DirectorStatus:
    active: bool  # this node is the RO director now
    dataplane: str
    dataplane_reason: str
    scheduler: str
    forwarding: str
    vip: str
    port: int
    reason: str  # why the backend set is what it is (or why nothing is programmed)
    fallback_active: bool
    healthy: int  # replicas getting new connections
    total: int  # replicas in /cluster
    backends: tuple[DirectorBackend, ...]
    applied: VirtualService | None  # the last service applied successfully
    last_apply_at: float | None  # wall clock
    last_apply_error: str | None  # None once an apply succeeds again
    cluster_error: str | None  # None while /cluster answers well
    cycles: int
    applies: int
    apply_errors: int
    clears: int
    clear_errors: int
    cluster_errors: int
    probe_failures: int

    def ro_info(self) -> RoInfo:
        """The status API's `ro` object."""
        return {
            "dataplane": self.dataplane,
            "dataplane_reason": self.dataplane_reason,
            "directing": self.active,
            "port": self.port,
            "scheduler": self.scheduler,
            "forwarding": self.forwarding,
            "fallback_active": self.fallback_active,
            "reason": self.reason,
            "healthy": self.healthy,
            "total": self.total,
            "apply_errors": self.apply_errors,
            "backends": [
                {
                    "member": b.member,
                    "address": b.address,
                    "port": b.port,
                    "state": b.state,
                    "healthy": b.healthy,
                    "weight": b.weight,
                    "lag": b.lag,
                    "last_probe_at": b.last_probe_at,
                    "last_error": b.last_error,
                    "reason": b.reason,
                }
                for b in self.backends
            ],
        }

    def as_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (addresses as strings)."""
        out = asdict(self)
        out["backends"] = [asdict(b) for b in self.backends]
        applied = self.applied
        out["applied"] = (
            None
            if applied is None
            else {
                "vip": str(applied.vip),
                "port": applied.port,
                "scheduler": applied.scheduler,
                "forwarding": applied.forwarding,
                "backends": [
                    {"address": str(rs.address), "port": rs.port, "weight": rs.weight}
                    for rs in applied.backends
                ],
            }
        )
        return out


class Director:
    """Drives the RO balancer from the RO instance's transitions (see `on_transition`).

    While active, every ro.poll_interval: `/cluster` from the local Patroni (a bad answer keeps
    the last good membership, logged once per change of reason), each replica's own
    `/replica?lag=<max_lag>` (and the SQL probe with ro.probe_sql) concurrently, each bounded
    by ro.probe_timeout, then BackendPolicy and `balancer.apply()` when the service changed,
    after a failed apply, or every `reconcile_interval`. A new director starts from a fresh
    policy and probes `rise` rounds WARMUP_SPACING apart before its first apply.
    While inactive: the balancer is cleared (also once at start-up, for a previous run's
    leftovers) and, for "dr", the RO VIP is kept on lo.

    Run `run()` as a task for the daemon's lifetime and call `await stop()` at shutdown,
    before cancelling that task: stop() clears the balancer.
    """

    def __init__(
        self,
        config: RoConfig,
        client: PatroniClient,
        balancer: LoadBalancer,
        *,
        log: Any,
        interface: str | None = None,
        netns: str | None = None,
        sql_probe: SqlProbe | None = None,
        real_server: RealServerHooks | None = None,
        dataplane_reason: str = "",
        reconcile_interval: float = RO_REAPPLY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.vip is None:
            raise DirectorError("ro.vip is not set: there is no RO VIP to direct")
        if not config.poll_interval > 0 or not config.probe_timeout > 0:
            raise DirectorError(
                f"ro.poll_interval and ro.probe_timeout must be > 0 seconds, got "
                f"{config.poll_interval} and {config.probe_timeout}"
            )
        self.config = config
        self.vip: IPAddress = config.vip.ip
        self._client = client
        self._balancer = balancer
        self._log = log
        self._clock = clock
        self._reconcile_interval = reconcile_interval
        self.dataplane_reason = dataplane_reason  # from choose_dataplane, for the status API
        if config.probe_sql:
            self._sql_probe: SqlProbe | None = sql_probe or psycopg_probe
        else:
            self._sql_probe = None
        # Only "dr" real servers need the VIP on lo; "tun" needs a tunnel device (not automated).
        self._real_server: RealServerHooks | None = None
        if config.forwarding == "dr":
            self._real_server = real_server or LoopbackRealServer(interface=interface, netns=netns)

        self.policy = self._new_policy()
        self._want_active = False
        self._active = False
        self._stopped = False
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one balancer operation at a time (apply vs clear)
        self._round: asyncio.Task[list[ProbeResult]] | None = None
        self._needs_clear = True  # a previous run may have left a service behind
        self._lo_state: bool | None = None  # True: VIP on lo, False: not; None: unknown
        self._warmup_left = 0
        self._fast_next = False
        self._view: ClusterView | None = None
        self._applied: VirtualService | None = None
        self._applied_at_mono: float | None = None
        self._apply_failed = False
        self._last_set: BackendSet | None = None
        self._latest: dict[str, list[ProbeResult]] = {}  # the last round, per member
        self._cluster_throttle = ErrorLogThrottle()
        self._apply_throttle = ErrorLogThrottle()

        self.cycles = 0
        self.applies = 0
        self.apply_errors = 0
        self.clears = 0
        self.clear_errors = 0
        self.cluster_errors = 0
        self.probe_failures = 0
        self.last_apply_error: str | None = None
        self.last_apply_at: float | None = None
        self.cluster_error: str | None = None

    # -- the interface the Engine uses ----------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active

    def on_transition(self, transition: Transition) -> None:
        """InstanceRunner listener: MASTER activates, leaving MASTER deactivates."""
        if transition.to_state is State.MASTER:
            self.activate()
        elif transition.from_state is State.MASTER:
            self.deactivate()

    def activate(self) -> None:
        if self._stopped or self._want_active:
            return
        self._want_active = True
        self._wake.set()

    def deactivate(self) -> None:
        if not self._want_active:
            return
        self._want_active = False
        if self._round is not None:
            self._round.cancel()  # probes are only reads; an apply is never interrupted
        self._wake.set()

    async def run(self) -> None:
        next_at = self._clock()
        while not self._stopped:
            self._wake.clear()
            try:
                await self.step()
            except Exception as exc:  # one bad cycle must not take the daemon (and RW) down
                self._log.error("RO director cycle failed", error=f"{type(exc).__name__}: {exc}")
            if self._want_active and self._fast_next:
                interval = min(WARMUP_SPACING, self.config.poll_interval)
            elif self._want_active:
                interval = self.config.poll_interval
            else:
                interval = self._reconcile_interval
            next_at += interval
            now = self._clock()
            if next_at < now:  # a slow cycle: no burst of catch-up cycles
                next_at = now
            if self._wake.is_set():
                next_at = now  # (de)activated during the cycle: act at once
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the event being set (see Reconciler.run).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_at - now):
                    await self._wake.wait()
            if self._wake.is_set():
                next_at = self._clock()

    async def step(self) -> None:
        """One cycle now: a director cycle while activated, a standby cycle otherwise.

        `run()` calls it on its cadence; tests and tools may call it directly instead.
        """
        if self._want_active:
            await self._director_cycle()
        else:
            await self._standby_cycle()

    async def stop(self) -> None:
        """Shutdown: clear the balancer and go inert. The VIP on lo ("dr") stays, as a real
        server's static set-up would, so another director's connections to us keep working."""
        self._stopped = True
        self.deactivate()
        self._wake.set()
        async with self._lock:
            if self._active or self._needs_clear:
                await self._clear("shutdown")
            self._active = False

    def status(self) -> DirectorStatus:
        view = self._view
        current = self._last_set if self._active else None
        in_service = {b.member: b for b in current.backends} if current else {}
        mono_now, wall_now = self._clock(), time.time()
        infos = []
        for line in self.policy.explain() if self._active else ():
            member = view.member(line.member) if view else None
            backend = in_service.get(line.member)
            results = self._latest.get(line.member, [])
            failed = [r.reason for r in results if not r.ok]
            probed_at = max((r.at for r in results), default=None)
            infos.append(
                DirectorBackend(
                    member=line.member,
                    state=line.state,
                    reason=line.reason,
                    address=line.address,
                    port=backend.port if backend else (member.port if member else None),
                    weight=backend.weight if backend else 0,
                    healthy=line.state == "active",
                    lag=member.lag if member else None,
                    last_probe_at=None if probed_at is None else wall_now - (mono_now - probed_at),
                    last_error=failed[0] if failed else None,
                )
            )
        replicas = [m for m in view.members if m.is_replica] if view and self._active else []
        healthy = sum(1 for b in infos if b.healthy and any(m.name == b.member for m in replicas))
        if not self._active:
            reason = "not the RO director"
        elif current is None:
            reason = self.cluster_error or "starting: no /cluster answer yet"
        elif self._warmup_left > 0:
            reason = f"warming up: {current.reason}"
        else:
            reason = current.reason
        return DirectorStatus(
            active=self._active,
            dataplane=self._balancer.name,
            dataplane_reason=self.dataplane_reason,
            scheduler=self.config.scheduler,
            forwarding=self.config.forwarding,
            vip=str(self.vip),
            port=self.config.port,
            reason=reason,
            fallback_active=bool(current and current.fallback_active),
            healthy=healthy,
            total=len(replicas),
            backends=tuple(infos),
            applied=self._applied if self._active else None,
            last_apply_at=self.last_apply_at,
            last_apply_error=self.last_apply_error,
            cluster_error=self.cluster_error,
            cycles=self.cycles,
            applies=self.applies,
            apply_errors=self.apply_errors,
            clears=self.clears,
            clear_errors=self.clear_errors,
            cluster_errors=self.cluster_errors,
            probe_failures=self.probe_failures,
        )

    # -- cycles --------------------------------------------------------------------------

    async def _director_cycle(self) -> None:
        if not self._active:
            self._active = True
            # A new term starts from fresh facts: no health, membership or probe results
            # carried over from an earlier term, however long ago that was.
            self.policy = self._new_policy()
            self._view = None
            self._latest = {}
            self._last_set = None
            self._applied = None
            self._warmup_left = max(0, self.config.rise - 1)
            self._log.info(
                "RO director active",
                vip=str(self.vip),
                dataplane=self._balancer.name,
                forwarding=self.config.forwarding,
            )
        if self._real_server is not None and self._lo_state is not False:
            await self._real_server_off()
        self.cycles += 1
        self._fast_next = False
        view = await self._read_cluster()
        if view is None or not self._want_active:
            return
        probes = await self._probe_round(view)
        if probes is None:  # deactivated while probing
            return
        now = self._clock()
        if self._warmup_left > 0:
            # Observation only: without the primary in these rounds, nothing enters the
            # policy's active set that would then "drain" without ever having been programmed.
            settings = self.policy.settings
            self.policy.settings = replace(settings, fallback="none", include_primary=False)
            try:
                self._last_set = self.policy.update(view, probes, now)
            finally:
                self.policy.settings = settings
            self._warmup_left -= 1
            self._fast_next = True
            return
        backend_set = self.policy.update(view, probes, now)
        self._last_set = backend_set
        desired = virtual_service(
            self.vip,
            self.config.port,
            backend_set.backends,
            scheduler=self.config.scheduler,
            forwarding=self.config.forwarding,
            persistence_timeout=self.config.persistence_timeout,
        )
        due = (
            desired != self._applied
            or self._apply_failed
            or self._applied_at_mono is None
            or now - self._applied_at_mono >= self._reconcile_interval
        )
        if not due:
            return
        async with self._lock:
            if not self._want_active or self._stopped:
                return  # deactivated meanwhile: the standby cycle clears instead
            await self._apply(desired, backend_set)

    async def _standby_cycle(self) -> None:
        if self._active or self._needs_clear:
            was_active = self._active
            self._active = False
            self._warmup_left = 0
            async with self._lock:
                if not self._want_active:
                    await self._clear("no longer the RO director" if was_active else "start-up")
        if self._real_server is not None and not self._want_active:
            await self._real_server_on()

    # -- /cluster and probes -------------------------------------------------------------

    async def _read_cluster(self) -> ClusterView | None:
        """The fresh view, or the last good one (logged once per change of problem)."""
        try:
            view = parse_cluster(await self._client.cluster())
        except PatroniUnavailable as exc:
            return self._cluster_failed(exc.cause, f"no /cluster answer: {exc.reason}")
        except PatroniError as exc:
            return self._cluster_failed("invalid", f"garbage /cluster answer: {exc}")
        except ClusterParseError as exc:
            return self._cluster_failed("invalid", f"garbage /cluster answer: {exc.reason}")
        decision = self._cluster_throttle.observe("ok", "")
        if self.cluster_error is not None and decision.log:
            self._log.info(
                "/cluster answering again",
                previous=self.cluster_error,
                failed_polls=decision.suppressed + 1,
            )
        self.cluster_error = None
        self._view = view
        return view

    def _cluster_failed(self, cause: str, reason: str) -> ClusterView | None:
        self.cluster_errors += 1
        self.cluster_error = reason
        decision = self._cluster_throttle.observe(cause, reason)
        if decision.log:
            kept = (
                f"keeping the last good set of {len(self._view.members)} member(s)"
                if self._view is not None
                else "no good /cluster yet: nothing to balance"
            )
            self._log.warning(
                "RO director: " + reason,
                cause=cause,
                action=kept,
                repeats_of_previous=decision.suppressed,
            )
        return self._view

    async def _probe_round(self, view: ClusterView) -> list[ProbeResult] | None:
        """Probe every candidate concurrently; None if deactivated meanwhile."""
        self._round = asyncio.get_running_loop().create_task(self._probe_all(view))
        try:
            return await self._round
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled ourselves, not just the round
            return None
        finally:
            self._round = None

    async def _probe_all(self, view: ClusterView) -> list[ProbeResult]:
        coros: list[Awaitable[ProbeResult]] = []
        for m in view.members:
            # Only replicas can be backends; the leader is judged from /cluster alone.
            if not m.is_replica or m.noloadbalance:
                continue
            coros.append(self._probe_http(m))
            if self._sql_probe is not None:
                coros.append(self._probe_sql(m))
        results = list(await asyncio.gather(*coros))
        latest: dict[str, list[ProbeResult]] = {}
        for r in results:
            latest.setdefault(r.member, []).append(r)
            if not r.ok:
                self.probe_failures += 1
        self._latest = latest
        return results

    async def _probe_http(self, m: Member) -> ProbeResult:
        if not m.api_url:
            return ProbeResult(m.name, False, "no api_url in /cluster", self._clock())
        timeout = self.config.probe_timeout
        try:
            async with asyncio.timeout(timeout):
                obs = await self._client.member_replica(
                    m.api_url, self.config.max_lag, now_fn=self._clock
                )
        except TimeoutError:
            reason = f"timeout after {timeout:g} s: {m.api_url} /replica"
            return ProbeResult(m.name, False, reason, self._clock())
        reason = obs.reason
        if obs.verdict is Verdict.NO:
            reason += f" (not a running replica within lag {self.config.max_lag} B)"
        return ProbeResult(m.name, obs.verdict is Verdict.YES, reason, obs.at)

    async def _probe_sql(self, m: Member) -> ProbeResult:
        assert self._sql_probe is not None
        if not m.host:
            return ProbeResult(m.name, False, "SQL: no host in /cluster", self._clock(), kind="sql")
        port = m.port or DEFAULT_PORT
        timeout = self.config.probe_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._sql_probe(m.name, m.host, port, timeout)
        except TimeoutError:
            reason = f"SQL: timeout after {timeout:g} s: {m.host}:{port}"
            return ProbeResult(m.name, False, reason, self._clock(), kind="sql")

    # -- the balancer and lo ---------------------------------------------------------------

    async def _apply(self, desired: VirtualService, backend_set: BackendSet) -> None:
        try:
            changed = await self._balancer.apply(desired)
        except Exception as exc:
            self.apply_errors += 1
            self._apply_failed = True
            self.last_apply_error = f"{type(exc).__name__}: {exc}"
            decision = self._apply_throttle.observe("error", self.last_apply_error)
            if decision.log:
                self._log.error(
                    "RO balancer apply failed; retrying next poll",
                    dataplane=self._balancer.name,
                    error=self.last_apply_error,
                    repeats_of_previous=decision.suppressed,
                )
            return
        if self._apply_failed:
            self._log.info("RO balancer applied again", dataplane=self._balancer.name)
            self._apply_throttle.observe("ok", "")
        self.applies += 1
        self._apply_failed = False
        self.last_apply_error = None
        self.last_apply_at = time.time()
        self._applied_at_mono = self._clock()
        previous, self._applied = self._applied, desired
        if desired != previous:
            self._log.info(
                "RO backends applied",
                reason=backend_set.reason,
                backends=[
                    f"{b.member}={_endpoint(b.address, b.port)}/{b.weight}"
                    for b in backend_set.backends
                ],
                fallback=backend_set.fallback_active,
                dataplane=self._balancer.name,
            )
        elif changed:
            self._log.warning(
                "RO balancer drift repaired", dataplane=self._balancer.name, vip=str(self.vip)
            )

    async def _clear(self, why: str) -> None:
        try:
            await self._balancer.clear()
        except Exception as exc:
            self.clear_errors += 1
            self._needs_clear = True
            self._log.error(
                "RO balancer clear failed; retrying",
                dataplane=self._balancer.name,
                why=why,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        self.clears += 1
        self._needs_clear = False
        self._applied = None
        self._applied_at_mono = None
        self._last_set = None
        self._log.info("RO balancer cleared", dataplane=self._balancer.name, why=why)

    async def _real_server_on(self) -> None:
        assert self._real_server is not None
        try:
            added = await self._real_server.setup(self.vip)
        except Exception as exc:
            self._lo_state = None
            self._log.error("cannot put the RO VIP on lo (DR real server)", error=str(exc))
            return
        self._lo_state = True
        if added:
            self._log.info("RO VIP on lo: DR real server of the director", vip=str(self.vip))

    async def _real_server_off(self) -> None:
        assert self._real_server is not None
        try:
            removed = await self._real_server.teardown(self.vip)
        except Exception as exc:
            self._lo_state = None
            self._log.error("cannot remove the RO VIP from lo", error=str(exc))
            return
        self._lo_state = False
        if removed:
            self._log.info("RO VIP removed from lo: this node directs", vip=str(self.vip))

    def _new_policy(self) -> BackendPolicy:
        c = self.config
        return BackendPolicy(
            BackendSettings(
                max_lag=c.max_lag,
                rise=c.rise,
                fall=c.fall,
                drain_timeout=c.drain_timeout,
                fallback=cast(Literal["primary", "none"], c.fallback),
                include_primary=c.include_primary,
                # NAT rewrites the port, so each member's own; DR and TUN cannot.
                port=None if c.forwarding == "nat" else c.port,
                family=cast(Literal[4, 6], self.vip.version),
            )
        )


def _endpoint(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
