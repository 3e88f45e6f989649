"""The L3 mode's composition root: the same Patroni policy as the VRRP engine decides, the
VIPs go on the bgp interface (lo), and pgvip's own BIRD announces them as host routes.

Built instead of pgvip.daemon.engine.Engine when rw.announce = "bgp", with the surface the
daemon (service.py) uses: start, stop, failed, runners, reconciler, retune."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from pgvip.config import Config, without_hot_keys
from pgvip.daemon.blueprint import eligibility_policy
from pgvip.daemon.engine import patroni_password
from pgvip.daemon.guard_keeper import keep_guard
from pgvip.daemon.host_state import claim_engine, others_vips, release
from pgvip.daemon.l3.ro_route_watch import RoRouteWatch
from pgvip.daemon.l3.route_runner import RouteRunner
from pgvip.daemon.notify import Notifier
from pgvip.daemon.patroni_watch import PatroniWatch
from pgvip.daemon.reconciler import ReconcileLoop
from pgvip.daemon.tasks import EngineTasks
from pgvip.dataplane.address_watcher import AddressWatcher
from pgvip.dataplane.addresses import AddressManager
from pgvip.dataplane.bgp.bird import BirdSpeaker
from pgvip.dataplane.bgp.bird_config import SpeakerSettings
from pgvip.dataplane.interfaces import primary_address
from pgvip.dataplane.stale_guard import StaleGuard
from pgvip.log import Logger
from pgvip.naming import StateNames
from pgvip.patroni.client import PatroniClient
from pgvip.policy.eligibility import EligibilityPolicy

if TYPE_CHECKING:
    from pgvip.status.metrics import Metrics

IPAddress = IPv4Address | IPv6Address
RECONCILE_INTERVAL = 2.0
SHUTDOWN_BUDGET = 0.8


class RouteReconciler(ReconcileLoop):
    """Heals drift of the VIPs on the bgp interface, on netlink events and periodically."""

    def __init__(self, runners: list[RouteRunner], log: Logger) -> None:
        super().__init__(log=log, interval=RECONCILE_INTERVAL)
        self._runners = runners

    async def reconcile_once(self) -> None:
        self.runs += 1
        for runner in self._runners:
            await runner.reconcile()

    async def watch(self, watcher: AddressWatcher) -> None:
        async for _ in watcher:
            self.poke()


class L3Engine:
    def __init__(self, config: Config, log: Logger, metrics: Metrics) -> None:
        self.config = config
        self.log = log
        self.metrics = metrics
        self.rw: RouteRunner | None = None
        self.ro: RouteRunner | None = None
        self.rw_watch: PatroniWatch | None = None
        self.ro_watch: RoRouteWatch | None = None
        self.speaker: BirdSpeaker | None = None
        self.source: IPAddress | None = None
        self.guard: StaleGuard | None = None
        self._runners: list[RouteRunner] = []
        self.reconciler: RouteReconciler = RouteReconciler(self._runners, log)
        self._task_group = EngineTasks(log)
        self._stack = contextlib.AsyncExitStack()
        self._notifier = Notifier(config.notify.command, config.notify.timeout, log)
        self.failed = self._task_group.failed

    @property
    def runners(self) -> tuple[RouteRunner, ...]:
        return tuple(self._runners)

    async def start(self) -> None:
        cfg, bgp = self.config, self.config.bgp
        vips = [cfg.rw.vip] if cfg.ro.vip is None else [cfg.rw.vip, cfg.ro.vip]
        claims = claim_engine(cfg)
        self._stack.callback(release, claims)
        self.source = source = bgp.source or await primary_address(
            cfg.vrrp.interface, cfg.rw.vip.version, exclude=[v.ip for v in vips]
        )
        self.addresses = await self._stack.enter_async_context(AddressManager(bgp.interface))
        theirs = others_vips(bgp.interface, claims)
        for vip in await self.addresses.owned():
            if str(vip.ip) not in theirs:  # a crashed run's: not ours until Patroni says so
                await self.addresses.remove(vip)
                self.log.warning(
                    "removed a VIP left by an earlier run", vip=str(vip), interface=bgp.interface
                )
        assert bgp.local_as is not None and bgp.peer_as is not None  # config checks
        settings = SpeakerSettings(
            interface=bgp.interface,
            vips=tuple(v.ip for v in vips),
            source=source,
            local_as=bgp.local_as,
            peer_as=bgp.peer_as,
            peers=bgp.peers,
            hold_time=bgp.hold_time,
            bfd=bgp.bfd,
            bfd_interval=bgp.bfd_interval,
            backstop=bgp.backstop,
        )
        self.speaker = BirdSpeaker(
            settings,
            binary=bgp.binary,
            runtime_dir=bgp.runtime_dir,
            name=cfg.instance.name or "pgvip",
            log=self.log,
        )
        await self.speaker.start()  # before any VIP is added: nothing is announced unchecked
        self._stack.push_async_callback(self.speaker.stop)
        p = cfg.patroni
        self.client = await self._stack.enter_async_context(
            PatroniClient(
                p.url,
                timeout=p.timeout,
                ca_file=p.ca_file,
                cert_file=p.cert_file,
                key_file=p.key_file,
                username=p.username,
                password=patroni_password(p),
            )
        )
        self.rw = self._runner("rw", cfg.rw.vip)
        self.rw_watch = PatroniWatch(
            self.client,
            eligibility_policy(cfg),
            poll=self.client.primary,
            interval=p.poll_interval,
            feed=self.rw.feed,
            log=self.log.bind(instance="rw"),
            on_poll=lambda obs: self.metrics.poll("rw", obs.latency, obs.cause),
        )
        if cfg.ro.vip is not None:
            self.ro = self._runner("ro", cfg.ro.vip)
            self.ro_watch = RoRouteWatch(
                self.client,
                EligibilityPolicy(cfg.ro.rise, cfg.ro.fall, None, failsafe_keep=False),
                interval=cfg.ro.poll_interval,
                max_lag=cfg.ro.max_lag,
                fallback=cfg.ro.fallback,
                feed=self.ro.feed,
                log=self.log.bind(instance="ro"),
                on_poll=lambda obs: self.metrics.poll("ro", obs.latency, obs.cause),
            )
        watcher = await self._stack.enter_async_context(AddressWatcher())
        if cfg.announce.reset_stale:
            # Traffic for a VIP that reaches a node not holding it (the backstop route, a
            # router still using a withdrawn path) is answered with a reset, not dropped.
            table = StateNames(cfg.instance.name).guard_table
            self.guard = StaleGuard([v.ip for v in vips], table=table)
            self._spawn(keep_guard(self.guard, self.log), "stale-guard")
        self._spawn(self.speaker.run(), "bgp-speaker")
        for runner in self._runners:
            self._spawn(runner.run(), f"route-{runner.name}")
        self._spawn(self.rw_watch.run(), "patroni-watch-rw")
        if self.ro_watch is not None:
            self._spawn(self.ro_watch.run(), "patroni-watch-ro")
        self._spawn(self.reconciler.run(), "reconcile")
        self._spawn(self.reconciler.watch(watcher), "netlink-watch")
        self.log.info(
            "started",
            announce="bgp",
            interface=bgp.interface,
            source=str(source),
            rw_vip=str(cfg.rw.vip),
            ro_vip=str(cfg.ro.vip) if cfg.ro.vip else None,
            peers=[str(x) for x in bgp.peers],
            local_as=bgp.local_as,
            peer_as=bgp.peer_as,
            hold_time=bgp.hold_time,
            bfd=bgp.bfd,
            patroni=p.url,
        )

    def _runner(self, name: str, vip: object) -> RouteRunner:
        from ipaddress import IPv4Interface, IPv6Interface

        assert isinstance(vip, IPv4Interface | IPv6Interface)
        runner = RouteRunner(
            name,
            vip,
            addresses=self.addresses,
            notifier=self._notifier,
            log=self.log,
            metrics=self.metrics,
        )
        self._runners.append(runner)
        return runner

    def retune(self, new: Config) -> bool:
        if without_hot_keys(new, self.config) != without_hot_keys(self.config, self.config):
            return False
        if new.ro != self.config.ro:  # the RO route watch takes its [ro] settings once
            return False
        old, self.config = self.config, new
        self._notifier = Notifier(new.notify.command, new.notify.timeout, self.log)
        for runner in self._runners:
            runner.retune(self._notifier)
        if new.patroni != old.patroni and self.rw_watch is not None:
            self.rw_watch.retune(eligibility_policy(new), new.patroni.poll_interval, None)
        return True

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        self._task_group.spawn(coro, name)

    async def stop(self, reason: str) -> None:
        # Withdraw first (the VIPs leave lo: BIRD withdraws them), then stop the speaker.
        for runner in self._runners:
            try:
                await asyncio.wait_for(runner.shutdown(reason), SHUTDOWN_BUDGET / 2)
            except Exception as exc:
                self.log.error(
                    "withdraw at shutdown failed",
                    instance=runner.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
        await self._task_group.cancel_all(SHUTDOWN_BUDGET / 2)
        await self._notifier.drain(0.2)
        await self._stack.aclose()
