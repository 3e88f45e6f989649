"""The pgvip process: builds the pipeline from a Config, runs its tasks, handles
signals (SIGTERM/SIGINT release and exit, SIGHUP reloads) and shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import signal
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, Any

from pgvip.config import Config, ConfigError, PatroniConfig, read_password_file
from pgvip.daemon import resign_record
from pgvip.daemon.cadence import Cadence
from pgvip.daemon.instance_runner import AnnounceSettings, InstanceRunner
from pgvip.daemon.notify import Notifier
from pgvip.daemon.patroni_watch import FastPolling, PatroniWatch
from pgvip.daemon.reconciler import Reconciler
from pgvip.daemon.ro.director import Director, DirectorError
from pgvip.daemon.ro.role_watch import RoleWatch
from pgvip.daemon.vrrp_channel import VrrpChannel, open_channel
from pgvip.dataplane.addresses import AddressError, AddressManager, AddressWatcher
from pgvip.dataplane.announce import AnnounceError, Announcer, send_garp, send_unsolicited_na
from pgvip.dataplane.interfaces import InterfaceError, primary_address
from pgvip.dataplane.loadbalancer import LoadBalancerError, choose_dataplane
from pgvip.dataplane.vrrp_socket import VrrpSocketError
from pgvip.log import configure as configure_logging
from pgvip.log import get_logger
from pgvip.patroni.client import PatroniClient, PatroniClientError
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.status.server import StatusServerError
from pgvip.vrrp.events import PriorityChanged
from pgvip.vrrp.instance import InstanceConfig, State, VrrpInstance

VipInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

if TYPE_CHECKING:
    from pgvip.status.metrics import Metrics
    from pgvip.status.sdnotify import Liveness, SdNotifier
    from pgvip.status.server import StatusServer

SHUTDOWN_BUDGET = 0.8  # seconds; systemd and the issue ask for exit within 1 s

# Start-up failures that come from the environment, not from a bug: `pgvip run` reports
# them in one line and exits 2 (no restart loop under systemd).
STARTUP_ERRORS: tuple[type[Exception], ...] = (
    AddressError,
    AnnounceError,
    DirectorError,
    InterfaceError,
    LoadBalancerError,
    PatroniClientError,
    StatusServerError,
    VrrpSocketError,
    ConfigError,
)


def _password(cfg: PatroniConfig) -> str | None:
    if cfg.password_file:
        return read_password_file(cfg.password_file)
    return cfg.password


# Settings a running election can take on a reload. Anything else (interface, VIPs, VRIDs,
# advert interval, unicast peers, the Patroni URL and TLS, the RO VIP) rebuilds the engine.
_HOT_PATRONI = (
    "rise",
    "fall",
    "grace",
    "poll_interval",
    "fast_poll_interval",
    "fast_poll_window",
    "failsafe_keep",
    "failsafe_max",
)


def _without_hot_keys(config: Config, base: Config) -> Config:
    """`config` with every hot-reloadable setting taken from `base`."""
    patroni = dataclasses.replace(
        config.patroni, **{k: getattr(base.patroni, k) for k in _HOT_PATRONI}
    )
    return dataclasses.replace(
        config,
        patroni=patroni,
        rw=dataclasses.replace(config.rw, priority=base.rw.priority),
        announce=base.announce,
        notify=base.notify,
        log=base.log,
        status=base.status,
        path=base.path,
        warnings=base.warnings,
    )


class Engine:
    """Everything that depends on the config: sockets, instances, tasks."""

    def __init__(self, config: Config, log: Any, metrics: Metrics) -> None:
        self.config = config
        self.log = log
        self.metrics = metrics
        self.runners: list[InstanceRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self.channel: VrrpChannel | None = None
        self.reconciler: Reconciler | None = None
        self.director: Director | None = None
        self.notifier: Notifier | None = None
        self.watches: list[Any] = []
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        cfg = self.config
        ifname = cfg.vrrp.interface
        rw_vip = cfg.rw.vip
        vips = [rw_vip] if cfg.ro.vip is None else [rw_vip, cfg.ro.vip]
        source = cfg.vrrp.unicast_src or await primary_address(
            ifname, rw_vip.version, exclude=[v.ip for v in vips]
        )
        self.addresses = await self._stack.enter_async_context(AddressManager(ifname))
        stale = await self.addresses.owned()
        for vip in stale:
            # keepalived does the same ("removing protocol VIPs"): a VIP left by a
            # crashed run must not be held before this run has won an election.
            await self.addresses.remove(vip)
            self.log.warning("removed a VIP left by an earlier run", vip=str(vip), interface=ifname)
        self.source = source
        self.channel = await open_channel(
            ifname, source, tuple(cfg.vrrp.unicast_peers), self.log, self.metrics
        )
        self._stack.callback(self.channel.close)
        self.notifier = Notifier(cfg.notify.command, cfg.notify.timeout, self.log)
        self.client = await self._stack.enter_async_context(
            PatroniClient(
                cfg.patroni.url,
                timeout=cfg.patroni.timeout,
                ca_file=cfg.patroni.ca_file,
                cert_file=cfg.patroni.cert_file,
                key_file=cfg.patroni.key_file,
                username=cfg.patroni.username,
                password=_password(cfg.patroni),
            )
        )
        self._announce_settings = AnnounceSettings(
            cfg.announce.garp_count, cfg.announce.garp_interval, cfg.announce.garp_refresh
        )
        runner = self._runner("rw", cfg.rw.vrid, cfg.rw.priority, rw_vip)
        watch = PatroniWatch(
            self.client,
            self._eligibility_policy(cfg),
            poll=self.client.primary,
            interval=cfg.patroni.poll_interval,
            feed=runner.feed,
            log=self.log.bind(instance="rw"),
            instance="rw",
            on_poll=lambda obs: self.metrics.poll("rw", obs.latency, obs.cause),
            fast=self._fast_polling(cfg, runner),
        )
        runner.on_master_resigned.append(watch.wake)
        self.watches.append(watch)
        if cfg.ro.vip is not None:
            self._start_ro(cfg.ro.vip)
        self.reconciler = Reconciler(self.runners, self.addresses, log=self.log)
        watcher = await self._stack.enter_async_context(AddressWatcher())

        self._spawn(self.channel.serve(), "vrrp-rx")
        for r in self.runners:
            self._spawn(r.run(), f"vrrp-{r.name}")
        for w in self.watches:
            self._spawn(w.run(), f"patroni-watch-{w.instance}")
        if self.director is not None:
            self._spawn(self.director.run(), "ro-director")
            self._spawn(self._export_ro_metrics(self.director), "ro-metrics")
        self._spawn(self.reconciler.run(), "reconcile")
        self._spawn(self.reconciler.watch(watcher), "netlink-watch")
        self.log.info(
            "started",
            interface=ifname,
            source=str(source),
            rw_vip=str(rw_vip),
            rw_vrid=cfg.rw.vrid,
            priority=cfg.rw.priority,
            ro_vip=str(cfg.ro.vip) if cfg.ro.vip else None,
            ro_vrid=cfg.ro.vrid if cfg.ro.vip else None,
            dataplane=self.director.status().ro_info()["dataplane"] if self.director else None,
            advert_int_cs=cfg.vrrp.advert_int,
            patroni=cfg.patroni.url,
            mode="unicast" if cfg.vrrp.unicast_peers else "multicast",
        )

    def _runner(self, name: str, vrid: int, priority: int, vip: VipInterface) -> InstanceRunner:
        cfg = self.config
        assert self.channel is not None and self.notifier is not None
        instance = VrrpInstance(
            InstanceConfig(
                name=name,
                vrid=vrid,
                priority=priority,
                advert_int=cfg.vrrp.advert_int,
                vips=(vip,),
                primary_address=self.source,
                preempt=cfg.vrrp.preempt,
                preempt_delay=cfg.vrrp.preempt_delay,
            ),
            time.monotonic(),
        )
        runner = InstanceRunner(
            name,
            instance,
            ifname=cfg.vrrp.interface,
            channel=self.channel,
            addresses=self.addresses,
            announcer=self._announcer(),
            announce=self._announce_settings,
            notifier=self.notifier,
            log=self.log,
            metrics=self.metrics,
        )
        self.runners.append(runner)
        self.channel.route(vrid, runner.feed)
        self._resume(runner)
        return runner

    def _resume(self, runner: InstanceRunner) -> None:
        """If this node's previous run resigned this VRID moments ago, start from that."""
        directory = resign_record.record_dir()
        if directory is None:
            return
        instance = runner.instance
        now = time.monotonic()
        at = resign_record.take(
            directory,
            instance.config.vrid,
            str(self.source),
            now,
            max_age=instance.master_down_interval,
        )
        if at is not None:
            instance.resume_after_resign(at)
            self.log.info(
                "previous run resigned moments ago: taking over after Skew_Time if eligible",
                instance=runner.name,
                resigned_ago=round(now - at, 3),
            )

    def _record_resign(self, runner: InstanceRunner, at: float) -> None:
        directory = resign_record.record_dir()
        if directory is None:
            return
        try:
            resign_record.write(directory, runner.instance.config.vrid, str(self.source), at)
        except OSError as exc:
            # Only costs the next run a Master_Down_Interval of listening.
            self.log.warning(
                "cannot leave the resign record for the next run",
                directory=str(directory),
                error=str(exc),
            )

    def _start_ro(self, vip: VipInterface) -> None:
        """The RO VIP: its own VRRP instance elects the director, which programs the balancer.
        Priority follows the Patroni role, so a replica directs unless none can."""
        cfg = self.config
        ro = cfg.ro
        runner = self._runner("ro", ro.vrid, ro.priority_replica, vip)
        balancer_cls, why = choose_dataplane(
            ro.dataplane,
            scheduler=ro.scheduler,
            forwarding=ro.forwarding,
            persistence_timeout=ro.persistence_timeout,
        )
        self.log.info("RO dataplane chosen", dataplane=balancer_cls.name, reason=why)
        self.director = Director(
            ro,
            self.client,
            balancer_cls(interface=cfg.vrrp.interface, service=(vip.ip, ro.port)),
            log=self.log.bind(instance="ro"),
            interface=cfg.vrrp.interface,
            dataplane_reason=why,
        )
        runner.listeners.append(self.director.on_transition)
        self.watches.append(
            RoleWatch(
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
            )
        )

    @staticmethod
    def _fast_polling(cfg: Config, runner: InstanceRunner) -> FastPolling:
        instance, gate = runner.instance, runner.link_gate
        return FastPolling(
            # Not while our own link is down: no answer could make us take the VIP then.
            urgent=lambda: gate.link_usable and instance.master_missing(time.monotonic()),
            interval=cfg.patroni.fast_poll_interval,
            window=cfg.patroni.fast_poll_window,
        )

    def _eligibility_policy(self, cfg: Config) -> EligibilityPolicy:
        return EligibilityPolicy(
            cfg.patroni.rise,
            cfg.patroni.fall,
            cfg.patroni.grace,
            failsafe_keep=cfg.patroni.failsafe_keep,
            failsafe_max=cfg.patroni.failsafe_max,
        )

    def retune(self, new: Config) -> bool:
        """Apply a reloaded config without a re-election when only settings that can change
        under a running election differ; False if the engine must be rebuilt instead."""
        if _without_hot_keys(new, self.config) != _without_hot_keys(self.config, self.config):
            return False
        old, self.config = self.config, new
        self.notifier = Notifier(new.notify.command, new.notify.timeout, self.log)
        self._announce_settings = AnnounceSettings(
            new.announce.garp_count, new.announce.garp_interval, new.announce.garp_refresh
        )
        for runner in self.runners:
            runner.retune(self._announce_settings, self.notifier)
        rw = self.runners[0]
        if new.rw.priority != old.rw.priority:
            rw.feed(PriorityChanged(new.rw.priority, "reload"))
        if new.patroni != old.patroni:
            watch = self.watch_for("rw")
            watch.retune(
                self._eligibility_policy(new),
                new.patroni.poll_interval,
                self._fast_polling(new, rw),
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

    def watch_for(self, instance: str) -> Any:
        return next((w for w in self.watches if w.instance == instance), None)

    def ro_info(self) -> Any:
        """The RO section of /status; None without an RO VIP."""
        if self.director is None:
            return None
        return self.director.status().ro_info()

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

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not self.failed.done():
            self.log.error(
                "task crashed", task=task.get_name(), error=f"{type(exc).__name__}: {exc}"
            )
            self.failed.set_result(exc)

    async def stop(self, reason: str) -> None:
        # Release first (VIP removed, priority 0 sent), then tear the rest down.
        for runner in self.runners:
            was_master = runner.instance.state is State.MASTER
            try:
                await asyncio.wait_for(runner.shutdown(reason), SHUTDOWN_BUDGET / 2)
            except Exception as exc:
                self.log.error("release at shutdown failed", instance=runner.name, error=str(exc))
            else:
                if was_master:
                    self._record_resign(runner, time.monotonic())
        if self.director is not None:
            try:
                await asyncio.wait_for(self.director.stop(), SHUTDOWN_BUDGET / 2)
            except Exception as exc:
                self.log.error("RO balancer clean-up at shutdown failed", error=str(exc))
        for task in self._tasks:
            task.cancel()
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_BUDGET / 2)
        if pending:
            self.log.error(
                "tasks ignored cancellation at shutdown", tasks=[t.get_name() for t in pending]
            )
        if self.notifier is not None:
            await self.notifier.drain(0.2)
        await self._stack.aclose()


class Daemon:
    """The process: the engine (rebuilt on a reload that changes it), plus what outlives a
    reload: metrics, the status API, systemd notification and the watchdog."""

    def __init__(self, config: Config, reload: Callable[[], Config]) -> None:
        self.config = config
        self._config = config
        self._reload = reload
        self.log = get_logger()
        self.engine: Engine | None = None
        self._events: asyncio.Queue[str] = asyncio.Queue()
        self.started_at = time.time()
        self.ready = False
        # Imported here, not at module top: prometheus_client is the daemon's largest import
        # after aiohttp, and `pgvip check-config` / `release` never need it.
        from pgvip.status.metrics import Metrics
        from pgvip.status.sdnotify import Liveness, SdNotifier

        instances = ("rw", "ro") if config.ro.vip is not None else ("rw",)
        self.metrics: Metrics = Metrics(instances)
        self.sd: SdNotifier = SdNotifier(log=self.log)
        self.liveness: Liveness = Liveness()
        self.status_server: StatusServer | None = None
        self._daemon_tasks: list[asyncio.Task[None]] = []

    def snapshot(self) -> Any:
        from pgvip.daemon.snapshot import build_snapshot

        return build_snapshot(self)

    def _health(self) -> str | None:
        return self.liveness.problem()

    async def _start_status(self) -> None:
        from pgvip.status.server import StatusServer

        self.status_server = StatusServer(
            self._config.status, self.snapshot, self.metrics, health=self._health, log=self.log
        )
        await self.status_server.start()

    def _reconciled(self) -> None:
        self.liveness.beat("reconcile")
        if not self.ready:
            self.ready = True
            self.sd.ready(self._status_line())
            self.log.info("ready", status=self._status_line())

    def _status_line(self) -> str:
        from pgvip.status import status_line

        try:
            return status_line(self.snapshot())
        except Exception as exc:  # a status line must never take the daemon down
            return f"status unavailable: {exc}"

    def _on_transition(self, _transition: object) -> None:
        if self.ready:
            self.sd.status(self._status_line())

    async def _start_engine(self, config: Config) -> Engine:
        engine = Engine(config, self.log, self.metrics)
        try:
            await engine.start()
        except Exception:
            await engine.stop("start-up failed")
            raise
        assert engine.reconciler is not None
        engine.reconciler.on_reconciled.append(self._reconciled)
        for runner in engine.runners:
            runner.listeners.append(self._on_transition)
        return engine

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, what in (
            (signal.SIGTERM, "SIGTERM"),
            (signal.SIGINT, "SIGINT"),
            (signal.SIGHUP, "SIGHUP"),
        ):
            loop.add_signal_handler(sig, self._events.put_nowait, what)
        await self._start_status()
        try:
            self.engine = await self._start_engine(self._config)
        except Exception:
            await self._stop_status()
            raise
        from pgvip.daemon.reconciler import VIP_RECONCILE_INTERVAL

        self.liveness.expect("reconcile", 3 * VIP_RECONCILE_INTERVAL + 1)
        self._daemon_tasks.append(loop.create_task(self.sd.watchdog(self.liveness.problem)))
        try:
            return await self._serve()
        finally:
            for task in self._daemon_tasks:
                task.cancel()
            await self._stop_status()

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        while True:
            assert self.engine is not None
            waiter = loop.create_task(self._events.get())
            done, _ = await asyncio.wait(
                {waiter, self.engine.failed},  # type: ignore[type-var]
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self.engine.failed in done:
                waiter.cancel()
                self.sd.stopping("internal error")
                await self.engine.stop("internal error")
                return 1
            what = waiter.result()
            if what == "SIGHUP":
                await self._reload_config()
                continue
            self.log.info("stopping", signal=what)
            self.sd.stopping(f"stopping on {what}")
            await self.engine.stop(what)
            self.log.info("stopped")
            return 0

    async def _stop_status(self) -> None:
        if self.status_server is not None:
            await self.status_server.stop()
            self.status_server = None

    async def _reload_config(self) -> None:
        self.sd.reloading()
        try:
            new = self._reload()
        except ConfigError as exc:
            self.log.error(
                "reload refused: invalid config; keeping the running one", problems=str(exc)
            )
            self.sd.ready(self._status_line())
            return
        except OSError as exc:
            self.log.error(
                "reload refused: cannot read config; keeping the running one", error=str(exc)
            )
            self.sd.ready(self._status_line())
            return
        if new == self._config:
            self.log.info("reload: config unchanged")
            self.sd.ready(self._status_line())
            return
        if new.status != self._config.status:
            self.log.warning("reload: [status] changes take effect at the next restart")
        assert self.engine is not None
        configure_logging(new.log.format, new.log.level)
        if self.engine.retune(new):
            self._config = self.config = new
            self.log.info("reload: applied without re-election")
            self.sd.ready(self._status_line())
            return
        self.log.info("reload: VRRP or network settings changed, restarting the election")
        await self.engine.stop("reload")
        self._config = self.config = new
        self.engine = await self._start_engine(new)
        self.sd.ready(self._status_line())
