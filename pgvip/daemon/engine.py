"""The composition root: builds everything that depends on the config (sockets, VRRP
instances, Patroni watches, the RO director, the reconciler) and runs it as asyncio tasks.

An engine has one RW pipeline and, with `ro.vip` set, one RO pipeline. Each pipeline names
its parts, so nothing depends on list order. A reload that changes only hot settings
retunes the running engine; any other change makes the daemon (service.py) build a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from pgvip.config import Config, PatroniConfig, read_password_file, without_hot_keys
from pgvip.daemon import resign_record
from pgvip.daemon.blueprint import announce_settings, eligibility_policy, instance_config
from pgvip.daemon.cadence import Cadence
from pgvip.daemon.guard_keeper import keep_guard
from pgvip.daemon.host_state import claim_engine, others_vips, release
from pgvip.daemon.instance_runner import InstanceRunner
from pgvip.daemon.notify import Notifier
from pgvip.daemon.patroni_watch import FastPolling, PatroniWatch
from pgvip.daemon.reconciler import Reconciler
from pgvip.daemon.ro.balancing import RetuneRefused
from pgvip.daemon.ro.director import Director
from pgvip.daemon.ro.role_watch import RoleWatch
from pgvip.daemon.tasks import EngineTasks
from pgvip.daemon.vrrp_channel import VrrpChannel, open_channel
from pgvip.dataplane.address_watcher import AddressWatcher
from pgvip.dataplane.addresses import AddressManager
from pgvip.dataplane.announce import Announcer, send_garp, send_unsolicited_na
from pgvip.dataplane.balancer.choice import choose_dataplane, explain_forwarding
from pgvip.dataplane.conflict_watch import Conflict, ConflictWatch, mac_text
from pgvip.dataplane.interfaces import primary_address
from pgvip.dataplane.stale_guard import StaleGuard
from pgvip.log import Logger
from pgvip.naming import StateNames
from pgvip.patroni.client import PatroniClient
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.vrrp.events import PriorityChanged
from pgvip.vrrp.instance import State, VrrpInstance

if TYPE_CHECKING:
    from pgvip.status import RoInfo
    from pgvip.status.metrics import Metrics

VipInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = IPv4Address | IPv6Address

SHUTDOWN_BUDGET = 0.8  # seconds; systemd and the issue ask for exit within 1 s


@dataclass(frozen=True)
class RwPipeline:
    """The RW VIP: its VRRP instance, made eligible by polling this node's `/primary`."""

    runner: InstanceRunner
    watch: PatroniWatch


@dataclass(frozen=True)
class RoPipeline:
    """The RO VIP: its VRRP instance, prioritised by this node's Patroni role (`/patroni`),
    elects the director, which programs the balancer while it holds the VIP."""

    runner: InstanceRunner
    watch: RoleWatch
    director: Director


def patroni_password(cfg: PatroniConfig) -> str | None:
    if cfg.password_file:
        return read_password_file(cfg.password_file)
    return cfg.password


def _shutdown_error(exc: BaseException) -> str:
    """A shutdown step's failure as text; a timeout's own message is empty."""
    if isinstance(exc, TimeoutError):
        return f"did not finish within {SHUTDOWN_BUDGET / 2:g} s"
    return f"{type(exc).__name__}: {exc}"


def _fast_polling(cfg: Config, runner: InstanceRunner) -> FastPolling:
    instance, gate = runner.instance, runner.link_gate
    return FastPolling(
        # Not while our own link is down: no answer could make us take the VIP then.
        urgent=lambda: gate.link_usable and instance.master_missing(time.monotonic()),
        interval=cfg.patroni.fast_poll_interval,
        window=cfg.patroni.fast_poll_window,
    )


class Engine:
    """Everything that depends on the config. `rw` is set once `start()` has built it, `ro`
    too when the config has an RO VIP; a failed start leaves what it built for `stop()`."""

    def __init__(self, config: Config, log: Logger, metrics: Metrics) -> None:
        self.config = config
        self.log = log
        self.metrics = metrics
        self.rw: RwPipeline | None = None
        self.ro: RoPipeline | None = None
        self.reconciler: Reconciler | None = None
        self.guard: StaleGuard | None = None
        self._runners: list[InstanceRunner] = []  # shared with the reconciler
        self._task_group = EngineTasks(log)
        self._stack = contextlib.AsyncExitStack()
        self._channel: VrrpChannel | None = None
        self._notifier: Notifier | None = None
        self._announce = announce_settings(config)
        self.failed = self._task_group.failed

    @property
    def runners(self) -> tuple[InstanceRunner, ...]:
        """The VRRP instances, RW first."""
        return tuple(self._runners)

    async def start(self) -> None:
        cfg = self.config
        ifname = cfg.vrrp.interface
        rw_vip = cfg.rw.vip
        vips = [rw_vip] if cfg.ro.vip is None else [rw_vip, cfg.ro.vip]
        claims = claim_engine(cfg)  # first: another instance's VRID or VIP is exit 2
        self._stack.callback(release, claims)
        self.source: IPAddress = cfg.vrrp.unicast_src or await primary_address(
            ifname, rw_vip.version, exclude=[v.ip for v in vips]
        )
        self.addresses = await self._stack.enter_async_context(AddressManager(ifname))
        theirs = others_vips(ifname, claims)
        for vip in await self.addresses.owned():
            if str(vip.ip) in theirs:
                continue  # another pgvip instance's (another cluster's) VIP
            # keepalived does the same ("removing protocol VIPs"): a VIP left by a
            # crashed run must not be held before this run has won an election.
            await self.addresses.remove(vip)
            self.log.warning("removed a VIP left by an earlier run", vip=str(vip), interface=ifname)
        self._channel = await open_channel(
            ifname, self.source, tuple(cfg.vrrp.unicast_peers), self.log, self.metrics
        )
        self._stack.callback(self._channel.close)
        self.conflicts = ConflictWatch(ifname, self._conflict, log=self.log, clock=time.monotonic)
        self._stack.callback(self.conflicts.close)
        self._notifier = Notifier(cfg.notify.command, cfg.notify.timeout, self.log)
        self.client = await self._stack.enter_async_context(
            PatroniClient(
                cfg.patroni.url,
                timeout=cfg.patroni.timeout,
                ca_file=cfg.patroni.ca_file,
                cert_file=cfg.patroni.cert_file,
                key_file=cfg.patroni.key_file,
                username=cfg.patroni.username,
                password=patroni_password(cfg.patroni),
            )
        )
        self.rw = rw = self._build_rw(rw_vip)
        if cfg.ro.vip is not None:
            self.ro = self._build_ro(cfg.ro.vip)
        self.reconciler = Reconciler(self._runners, self.addresses, log=self.log)
        watcher = await self._stack.enter_async_context(AddressWatcher())

        if cfg.announce.reset_stale:
            table = StateNames(cfg.instance.name).guard_table
            self.guard = StaleGuard([v.ip for v in vips], table=table)
            self._spawn(keep_guard(self.guard, self.log), "stale-guard")
        self._spawn(self._channel.serve(), "vrrp-rx")
        for runner in self._runners:
            self._spawn(runner.run(), f"vrrp-{runner.name}")
        self._spawn(rw.watch.run(), "patroni-watch-rw")
        if self.ro is not None:
            self._spawn(self.ro.watch.run(), "patroni-watch-ro")
            self._spawn(self.ro.director.run(), "ro-director")
            self._spawn(self._export_ro_metrics(self.ro.director), "ro-metrics")
        self._spawn(self.reconciler.run(), "reconcile")
        self._spawn(self.reconciler.watch(watcher), "netlink-watch")
        ro_info = self.ro_info()
        self.log.info(
            "started",
            interface=ifname,
            source=str(self.source),
            rw_vip=str(rw_vip),
            rw_vrid=cfg.rw.vrid,
            priority=cfg.rw.priority,
            ro_vip=str(cfg.ro.vip) if cfg.ro.vip else None,
            ro_vrid=cfg.ro.vrid if cfg.ro.vip else None,
            dataplane=ro_info["dataplane"] if ro_info else None,
            advert_int_cs=cfg.vrrp.advert_int,
            patroni=cfg.patroni.url,
            mode="unicast" if cfg.vrrp.unicast_peers else "multicast",
        )

    def _build_rw(self, vip: VipInterface) -> RwPipeline:
        cfg = self.config
        runner = self._runner("rw", cfg.rw.vrid, cfg.rw.priority, vip)
        watch = PatroniWatch(
            self.client,
            eligibility_policy(cfg),
            poll=self.client.primary,
            interval=cfg.patroni.poll_interval,
            feed=runner.feed,
            log=self.log.bind(instance="rw"),
            instance="rw",
            on_poll=lambda obs: self.metrics.poll("rw", obs.latency, obs.cause),
            fast=_fast_polling(cfg, runner),
        )
        runner.on_master_resigned.append(watch.wake)
        return RwPipeline(runner, watch)

    def _build_ro(self, vip: VipInterface) -> RoPipeline:
        """Priority follows the Patroni role, so a replica directs unless none can."""
        cfg = self.config
        ro = cfg.ro
        runner = self._runner("ro", ro.vrid, ro.priority_replica, vip)
        balancer_cls, why = choose_dataplane(
            ro.dataplane,
            scheduler=ro.scheduler,
            forwarding=ro.forwarding,
            persistence_timeout=ro.persistence_timeout,
        )
        self.log.info(
            "RO dataplane chosen",
            dataplane=balancer_cls.name,
            reason=why,
            forwarding=ro.forwarding,
            forwarding_reason=explain_forwarding(balancer_cls.name, ro.forwarding),
        )
        director = Director(
            ro,
            self.client,
            balancer_cls(
                interface=cfg.vrrp.interface,
                service=(vip.ip, ro.port),
                instance=cfg.instance.name,
            ),
            log=self.log.bind(instance="ro"),
            interface=cfg.vrrp.interface,
            dataplane_reason=why,
        )
        runner.listeners.append(director.on_transition)
        watch = RoleWatch(
            self.client.patroni_status,
            # fall 1: the director reads /cluster from its own Patroni, so a node that
            # cannot ask it is useless as director and must not win (or keep) the RO VIP
            # for `fall` more polls. The RW VIP keeps the patience of patroni.fall.
            EligibilityPolicy(cfg.patroni.rise, 1, None, failsafe_keep=False),
            priority_leader=ro.priority_leader,
            priority_replica=ro.priority_replica,
            interval=ro.poll_interval,
            feed=runner.feed,
            log=self.log.bind(instance="ro"),
            on_poll=lambda obs: self.metrics.poll("ro", obs.latency, obs.cause),
            port_timeout=ro.probe_timeout,
        )
        director.on_refused.append(watch.member_refused)  # our own PostgreSQL: resign now
        director.local_member = watch.member_name
        return RoPipeline(runner, watch, director)

    def _runner(self, name: str, vrid: int, priority: int, vip: VipInterface) -> InstanceRunner:
        cfg = self.config
        assert self._channel is not None and self._notifier is not None
        config = instance_config(cfg, name, vrid, priority, self.source)
        assert config.vips == (vip,)
        instance = VrrpInstance(config, time.monotonic())
        runner = InstanceRunner(
            name,
            instance,
            ifname=cfg.vrrp.interface,
            channel=self._channel,
            addresses=self.addresses,
            announcer=self._announcer(),
            announce=self._announce,
            notifier=self._notifier,
            log=self.log,
            metrics=self.metrics,
            conflicts=self.conflicts,
        )
        self._runners.append(runner)
        self._channel.route(vrid, runner.feed, [v.ip for v in config.vips])
        resign_record.resume(instance, str(self.source), self.log)
        return runner

    def retune(self, new: Config) -> bool:
        """Apply a reloaded config without a re-election when only settings that can change
        under a running election differ; False if the engine must be rebuilt instead."""
        if without_hot_keys(new, self.config) != without_hot_keys(self.config, self.config):
            return False
        if self.ro is not None and new.ro != self.config.ro:
            try:  # first: the one step that can refuse, before anything has changed
                self.ro.director.retune(new.ro)
            except RetuneRefused as exc:
                self.log.info("reload: the [ro] change needs a new engine", why=str(exc))
                return False
        old, self.config = self.config, new
        self._notifier = Notifier(new.notify.command, new.notify.timeout, self.log)
        self._announce = announce_settings(new)
        for runner in self._runners:
            runner.retune(self._announce, self._notifier)
        if self.rw is None:
            return True
        if new.rw.priority != old.rw.priority:
            self.rw.runner.feed(PriorityChanged(new.rw.priority, "reload"))
        if new.patroni != old.patroni:
            self.rw.watch.retune(
                eligibility_policy(new),
                new.patroni.poll_interval,
                _fast_polling(new, self.rw.runner),
            )
        return True

    async def _export_ro_metrics(self, director: Director) -> None:
        """Mirror the director's pool and error counts into the metrics, once per RO poll."""
        exported = 0
        cadence = Cadence(self.config.ro.poll_interval)
        while True:
            st = director.status()
            self.metrics.backends(st.healthy if st.active else 0, st.total)
            errors = st.apply_errors + st.clear_errors
            for _ in range(errors - exported):
                self.metrics.dataplane_error()
            exported = errors
            await cadence.wait()

    def ro_info(self) -> RoInfo | None:
        """The RO section of /status; None without an RO VIP."""
        if self.ro is None:
            return None
        return self.ro.director.status().ro_info()

    def _conflict(self, c: Conflict) -> None:
        """Another host claims a VIP we hold: report it (never answer with more GARPs)."""
        owner = next((r.name for r in self._runners if c.ip in {v.ip for v in r.vips}), "")
        self.metrics.vip_conflict(owner)
        if c.new:
            self.log.warning("VIP conflict: another host claims a VIP this node holds; pgvip "
                             "will not fight it: find that host by its MAC", instance=owner,
                             vip=str(c.ip), mac=mac_text(c.mac), seen=c.kind,
                             count=c.count)  # fmt: skip

    def _announce_failed(self, exc: Exception) -> None:
        self.log.warning("announcement failed", error=str(exc))

    def _announcer(self) -> Announcer:
        metrics = self.metrics

        def garp(ifname: str, address: IPv4Address) -> None:
            send_garp(ifname, address)
            metrics.announced("garp")

        def na(ifname: str, address: IPv6Address) -> None:
            send_unsolicited_na(ifname, address)
            metrics.announced("na")

        return Announcer(on_error=self._announce_failed, send_v4=garp, send_v6=na)

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        self._task_group.spawn(coro, name)

    async def stop(self, reason: str) -> None:
        # Release first (VIP removed, priority 0 sent), then tear the rest down.
        for runner in self._runners:
            was_master = runner.instance.state is State.MASTER
            try:
                await asyncio.wait_for(runner.shutdown(reason), SHUTDOWN_BUDGET / 2)
            except Exception as exc:
                self.log.error(
                    "release at shutdown failed", instance=runner.name, error=_shutdown_error(exc)
                )
            else:
                if was_master:
                    resign_record.leave(runner.instance, str(self.source), self.log)
        if self.ro is not None:
            try:
                await asyncio.wait_for(self.ro.director.stop(), SHUTDOWN_BUDGET / 2)
            except Exception as exc:
                # `pgvip release` (ExecStopPost) removes what is left.
                self.log.error(
                    "RO balancer clean-up at shutdown failed", error=_shutdown_error(exc)
                )
        await self._task_group.cancel_all(SHUTDOWN_BUDGET / 2)
        if self._notifier is not None:
            await self._notifier.drain(0.2)
        await self._stack.aclose()
