"""The RO director: while this node's RO VRRP instance is MASTER it reads `/cluster`, probes every
replica and programs the load balancer; otherwise it keeps the balancer empty and, for "dr"
forwarding, keeps the RO VIP on `lo` so this node can be a real server of whoever directs.

Its phases and their legal moves are the table in `pgvip.daemon.ro.phases`; this module feeds
that table and sequences the I/O: `/cluster` and the probes are in `probes` (the port watch in
`port_check`), applying and clearing in `balancing`, the VIP on lo in `real_server`, the
reported status in `status`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pgvip.config import RoConfig
from pgvip.daemon.ro.balancing import BalancerDriver, backend_settings, desired_service
from pgvip.daemon.ro.phases import HOLDS_SERVICE, DirectorInput, Phase, next_phase
from pgvip.daemon.ro.port_check import Target, port_watch
from pgvip.daemon.ro.probes import ClusterReader, SqlProbe, probe_members, psycopg_probe
from pgvip.daemon.ro.real_server import LoopbackRealServer, LoVip, RealServerHooks
from pgvip.daemon.ro.status import DirectorStatus, describe_backends, director_reason
from pgvip.dataplane.balancer import IPAddress, LoadBalancer
from pgvip.patroni.client import PatroniClient
from pgvip.patroni.cluster import ClusterView
from pgvip.policy.backends import BackendPolicy, BackendSet, ProbeResult
from pgvip.vrrp.actions import Transition
from pgvip.vrrp.states import State

__all__ = ["RO_REAPPLY_INTERVAL", "WARMUP_SPACING", "Director", "DirectorError"]

# Re-apply an unchanged RO service this often (apply() reads the kernel back, so drift
# heals); also the standby cycle's cadence. Not the VIP address reconcile interval.
RO_REAPPLY_INTERVAL = 5.0
# A new director probes `rise` rounds this far apart before its first apply, so that taking
# over does not pass through "no healthy replica" (fallback) for rise x poll_interval.
WARMUP_SPACING = 0.1


class DirectorError(RuntimeError):
    """The director cannot be built from these settings (e.g. ro.vip is not set)."""


class Director:
    """Drives the RO balancer from the RO instance's transitions (see `on_transition`).

    While active, every ro.poll_interval: `/cluster` from the local Patroni (a bad answer keeps
    the last good membership, logged once per change of reason), each replica's own
    `/replica?lag=<max_lag>` (and SQL, and a connect to its port) concurrently, each bounded
    by ro.probe_timeout, then BackendPolicy and `balancer.apply()` when the service changed,
    after a failed apply, or every `reconcile_interval`; a backend in rotation that refuses
    the port watch (every ro.port_check_interval) leaves at once, a round follows. A new director
    starts fresh and probes `rise` rounds WARMUP_SPACING apart before its first apply.
    While inactive: the balancer is cleared (also once at start-up, for a previous run's
    leftovers) and, for "dr", the RO VIP is kept on lo. Run `run()` as a task for the daemon's
    lifetime; `await stop()` (it clears the balancer) at shutdown, before cancelling it."""

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
        self._driver = BalancerDriver(balancer, log=log, clock=clock)
        self._log = log
        self._clock = clock
        self._reconcile_interval = reconcile_interval
        self.dataplane_reason = dataplane_reason  # from choose_dataplane, for the status API
        self._sql_probe: SqlProbe | None = (
            (sql_probe or psycopg_probe) if config.probe_sql else None
        )
        # Only "dr" real servers need the VIP on lo ("tun" needs a tunnel device, not
        # automated); otherwise a lo VIP of ours (a "dr" config before a reload) is taken off.
        hooks = real_server or LoopbackRealServer(interface=interface, netns=netns)
        self._lo = LoVip(hooks, self.vip, log=log)
        self._dr = config.forwarding == "dr"

        self.policy = self._new_policy()
        self._master = False  # the RO instance is MASTER: the input that (de)activates us
        self.phase = Phase.UNCLEARED  # a previous run may have left a service behind
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one balancer operation at a time (apply vs clear)
        self._round: asyncio.Task[list[ProbeResult]] | None = None
        self._take_out: asyncio.Task[None] | None = None  # the port watch's fast removal
        self._warmup_left = 0  # observation rounds left while WARMING
        self._fast_next = False
        self._cluster = ClusterReader(client, log=log)
        self._last_set: BackendSet | None = None
        self._latest: dict[str, list[ProbeResult]] = {}  # the last round, per member
        self.on_refused: list[Callable[[str, str, int, str], None]] = []
        self.local_member: Callable[[], str | None] = lambda: None  # this node's member name
        self.cycles = 0
        self.probe_failures = 0

    # -- the interface the Engine uses ----------------------------------------------------

    @property
    def active(self) -> bool:
        return self.phase.directing

    def on_transition(self, transition: Transition) -> None:
        """InstanceRunner listener: MASTER activates, leaving MASTER deactivates."""
        if transition.to_state is State.MASTER:
            self.activate()
        elif transition.from_state is State.MASTER:
            self.deactivate()

    def activate(self) -> None:
        if self.phase is Phase.STOPPED or self._master:
            return
        self._master = True
        self._wake.set()

    def deactivate(self) -> None:
        if not self._master:
            return
        self._master = False
        if self._round is not None:
            self._round.cancel()  # probes are only reads; an apply is never interrupted
        self._wake.set()

    def retune(self, config: RoConfig) -> None:
        """A reload changed hot [ro] settings only (RetuneRefused if more, see balancing):
        the next round probes and applies with them (an IPVS service edit); health stays."""
        changed = self._driver.retune_check(self.config, config)
        self.config = config
        self.policy.settings = backend_settings(config, self.vip)
        self._log.info("RO settings retuned", changed=changed, active=self.active)
        self._wake.set()

    async def run(self) -> None:
        c = self.config
        async with port_watch(self._in_rotation, self._refused, interval=c.port_check_interval,
                              timeout=c.probe_timeout, clock=self._clock,
                              local=self._local_in_rotation, log=self._log):  # fmt: skip
            await self._cycles()

    async def _cycles(self) -> None:
        next_at = self._clock()
        while self.phase is not Phase.STOPPED:
            self._wake.clear()
            try:
                await self.step()
            except Exception as exc:  # one bad cycle must not take the daemon (and RW) down
                self._log.error("RO director cycle failed", error=f"{type(exc).__name__}: {exc}")
            if self._master and self._fast_next:
                interval = min(WARMUP_SPACING, self.config.poll_interval)
            elif self._master:
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
        if self._master:
            await self._director_cycle()
        else:
            await self._standby_cycle()

    async def stop(self) -> None:
        """Shutdown: clear the balancer and go inert. The VIP on lo ("dr") stays, as a real
        server's static set-up would, so another director's connections to us keep working."""
        previous = self.phase
        self._enter(DirectorInput.STOP, "shutdown", "RO director stopped")
        self.deactivate()
        self._wake.set()
        async with self._lock:  # a standby cycle may be clearing: once is enough
            if previous in HOLDS_SERVICE and not self._driver.cleared:
                await self._clear("shutdown")

    def status(self) -> DirectorStatus:
        view = self._cluster.view
        active = self.active
        current = self._last_set if active else None
        infos = describe_backends(
            self.policy.explain() if active else (),
            view,
            current,
            self._latest,
            mono_now=self._clock(),
            wall_now=time.time(),
        )
        replicas = [m for m in view.members if m.is_replica] if view and active else []
        healthy = sum(1 for b in infos if b.healthy and any(m.name == b.member for m in replicas))
        reason = director_reason(active, current, self._cluster.error,
                                 warming=self.phase is Phase.WARMING)  # fmt: skip
        return DirectorStatus(
            active=active,
            dataplane_reason=self.dataplane_reason,
            scheduler=self.config.scheduler,
            forwarding=self.config.forwarding,
            vip=str(self.vip),
            port=self.config.port,
            reason=reason,
            fallback_active=bool(current and current.fallback_active),
            healthy=healthy,
            total=len(replicas),
            backends=infos,
            applied=self._driver.applied if active else None,
            **self._driver.counters(),
            cluster_error=self._cluster.error,
            cycles=self.cycles,
            cluster_errors=self._cluster.errors,
            probe_failures=self.probe_failures,
        )

    # -- cycles --------------------------------------------------------------------------

    async def _director_cycle(self) -> None:
        if not self.phase.directing:
            # A new term starts from fresh facts: no health, membership or probe results
            # carried over from an earlier term, however long ago that was.
            self.policy = self._new_policy()
            self._cluster.view = None
            self._latest = {}
            self._last_set = None
            self._driver.applied = None
            self._warmup_left = max(0, self.config.rise - 1)
            self._enter(
                DirectorInput.MASTER,
                "the RO instance is MASTER",
                "RO director active",
                vip=str(self.vip),
                dataplane=self._driver.name,
                forwarding=self.config.forwarding,
            )
            if self._warmup_left == 0:
                self._enter(DirectorInput.WARMED, "rise 1: no warm-up", "RO director warmed up")
        await self._lo.take_off(once=True)
        self.cycles += 1
        self._fast_next = False
        view = await self._cluster.read()
        if view is None or not self._master:
            return
        probes = await self._probe_round(view)
        if probes is None:  # deactivated while probing
            return
        now = self._clock()
        if self.phase is Phase.WARMING:
            # Observation only: without the primary in these rounds, nothing enters the
            # policy's active set that would then "drain" without ever having been programmed.
            settings = self.policy.settings
            self.policy.settings = replace(settings, fallback="none", include_primary=False)
            try:
                self._last_set = self.policy.update(view, probes, now)
            finally:
                self.policy.settings = settings
            self._warmup_left -= 1
            if self._warmup_left == 0:
                why = f"{self.config.rise - 1} warm-up round(s) probed"
                self._enter(DirectorInput.WARMED, why, "RO director warmed up")
            self._fast_next = True
            return
        backend_set = self.policy.update(view, probes, now)
        self._last_set = backend_set
        await self._apply(backend_set, now)

    async def _apply(self, backend_set: BackendSet, now: float, *, force: bool = False) -> None:
        desired = desired_service(self.config, self.vip, backend_set)
        if not force and not self._driver.due(desired, now, self._reconcile_interval):
            return
        async with self._lock:
            if not self._master or self.phase is Phase.STOPPED:
                return  # deactivated meanwhile: the standby cycle clears instead
            await self._driver.apply(desired, backend_set)

    async def _standby_cycle(self) -> None:
        if self.phase in HOLDS_SERVICE:
            was_active = self.phase.directing
            why = "no longer the RO director" if was_active else "start-up"
            self._enter(DirectorInput.NOT_MASTER, why, "RO director inactive")
            self._warmup_left = 0
            async with self._lock:
                if not self._master:
                    await self._clear(why)
        if not self._master:
            why = f"ro.forwarding is {self.config.forwarding}, not dr"
            await (self._lo.put_on() if self._dr else self._lo.take_off(once=True, why=why))

    # -- /cluster and probes -------------------------------------------------------------

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
        c = self.config
        results = await probe_members(
            view, self._client, max_lag=c.max_lag, timeout=c.probe_timeout,
            sql_probe=self._sql_probe, clock=self._clock, port_check=c.port_check_interval > 0,
        )  # fmt: skip
        latest: dict[str, list[ProbeResult]] = {}
        for r in results:
            latest.setdefault(r.member, []).append(r)
            if not r.ok:
                self.probe_failures += 1
        self._latest = latest
        return results

    def _in_rotation(self) -> list[Target]:  # the port watch's targets, while directing
        if self.phase is not Phase.DIRECTING or not self._master or self._last_set is None:
            return []
        return [(b.member, str(b.address), b.port) for b in self._last_set.active]

    def _local_in_rotation(self) -> list[Target]:  # this node's own PostgreSQL, if in rotation
        me = self.local_member()
        return [t for t in self._in_rotation() if me is not None and t[0] == me]

    def _refused(self, result: ProbeResult) -> None:
        """A backend in rotation failed the port watch (refused, or its host is gone): out now,
        on the last good /cluster
        (a round could wait out a stopping Patroni's REST API), then a full round; listeners
        (`on_refused`, e.g. our own RoleWatch when it is this node) hear member, host, port."""
        self._log.info("RO backend failed its port check: taking it out", member=result.member,
                       reason=result.reason)  # fmt: skip
        view, now = self._cluster.view, self._clock()
        if view is not None and self.phase is Phase.DIRECTING and self._master:
            for member, host, port in self._in_rotation():
                if member == result.member:
                    for listener in self.on_refused:
                        listener(member, host, port, result.reason)
            self._last_set = self.policy.update(view, [result], now)
            self._latest.setdefault(result.member, []).append(result)
            self._take_out = asyncio.get_running_loop().create_task(
                self._apply(self._last_set, now, force=True))  # fmt: skip
        self._wake.set()

    # -- the balancer and lo ---------------------------------------------------------------

    async def _clear(self, why: str) -> None:
        if not await self._driver.clear(why):
            self._enter(DirectorInput.CLEAR_FAILED, why)
            return
        self._last_set = None
        fields = {"dataplane": self._driver.name}
        if not self._enter(DirectorInput.CLEARED, why, "RO balancer cleared", **fields):
            self._log.info("RO balancer cleared", why=why, **fields)

    def _enter(
        self, event: DirectorInput, why: str, message: str = "RO director phase", **fields: Any
    ) -> bool:
        """Move by the phase table; a change is logged with from/to/why. True if it moved."""
        old = self.phase
        self.phase = new = next_phase(old, event)
        if new is old:
            return False
        self._log.info(message, **{"from": old.value, "to": new.value}, why=why, **fields)
        return True

    def _new_policy(self) -> BackendPolicy:
        return BackendPolicy(backend_settings(self.config, self.vip))
