"""The pgvip process: builds the pipeline from a Config, runs its tasks, handles
signals (SIGTERM/SIGINT release and exit, SIGHUP reloads) and shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from pgvip.config import Config, ConfigError, PatroniConfig, read_password_file
from pgvip.daemon.instance_runner import AnnounceSettings, InstanceRunner
from pgvip.daemon.notify import Notifier
from pgvip.daemon.patroni_watch import PatroniWatch
from pgvip.daemon.reconciler import Reconciler
from pgvip.daemon.vrrp_channel import VrrpChannel, open_channel
from pgvip.dataplane.addresses import AddressManager, AddressWatcher
from pgvip.dataplane.announce import Announcer
from pgvip.dataplane.interfaces import primary_address
from pgvip.log import get_logger
from pgvip.patroni.client import PatroniClient
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.vrrp.instance import InstanceConfig, VrrpInstance

SHUTDOWN_BUDGET = 0.8  # seconds; systemd and the issue ask for exit within 1 s


def _password(cfg: PatroniConfig) -> str | None:
    if cfg.password_file:
        return read_password_file(cfg.password_file)
    return cfg.password


class Engine:
    """Everything that depends on the config: sockets, instances, tasks."""

    def __init__(self, config: Config, log: Any) -> None:
        self.config = config
        self.log = log
        self.runners: list[InstanceRunner] = []
        self.watches: list[PatroniWatch] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self.channel: VrrpChannel | None = None
        self.reconciler: Reconciler | None = None
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        cfg = self.config
        ifname = cfg.vrrp.interface
        rw_vip = cfg.rw.vip
        vips = [rw_vip]
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
        self.channel = await open_channel(ifname, source, tuple(cfg.vrrp.unicast_peers), self.log)
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
        now = time.monotonic()
        rw = VrrpInstance(
            InstanceConfig(
                name="rw",
                vrid=cfg.rw.vrid,
                priority=cfg.rw.priority,
                advert_int=cfg.vrrp.advert_int,
                vips=(rw_vip,),
                primary_address=source,
                preempt=cfg.vrrp.preempt,
                preempt_delay=cfg.vrrp.preempt_delay,
            ),
            now,
        )
        announce = AnnounceSettings(
            cfg.announce.garp_count, cfg.announce.garp_interval, cfg.announce.garp_refresh
        )
        runner = InstanceRunner(
            "rw",
            rw,
            ifname=ifname,
            channel=self.channel,
            addresses=self.addresses,
            announcer=Announcer(on_error=self._announce_failed),
            announce=announce,
            notifier=self.notifier,
            log=self.log,
        )
        self.runners.append(runner)
        self.channel.route(cfg.rw.vrid, runner.feed)
        watch = PatroniWatch(
            self.client,
            EligibilityPolicy(
                cfg.patroni.rise,
                cfg.patroni.fall,
                cfg.patroni.grace,
                failsafe_keep=cfg.patroni.failsafe_keep,
                failsafe_max=cfg.patroni.failsafe_max,
            ),
            poll=self.client.primary,
            interval=cfg.patroni.poll_interval,
            feed=runner.feed,
            log=self.log.bind(instance="rw"),
        )
        self.watches.append(watch)
        self.reconciler = Reconciler(self.runners, self.addresses, log=self.log)
        watcher = await self._stack.enter_async_context(AddressWatcher())

        self._spawn(self.channel.serve(), "vrrp-rx")
        for r in self.runners:
            self._spawn(r.run(), f"vrrp-{r.name}")
        for w in self.watches:
            self._spawn(w.run(), "patroni-watch")
        self._spawn(self.reconciler.run(), "reconcile")
        self._spawn(self.reconciler.watch(watcher), "netlink-watch")
        self.log.info(
            "started",
            interface=ifname,
            source=str(source),
            rw_vip=str(rw_vip),
            rw_vrid=cfg.rw.vrid,
            priority=cfg.rw.priority,
            advert_int_cs=cfg.vrrp.advert_int,
            patroni=cfg.patroni.url,
            mode="unicast" if cfg.vrrp.unicast_peers else "multicast",
        )

    def _announce_failed(self, exc: Exception) -> None:
        self.log.warning("announcement failed", error=str(exc))

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
            try:
                await asyncio.wait_for(runner.shutdown(reason), SHUTDOWN_BUDGET / 2)
            except Exception as exc:
                self.log.error("release at shutdown failed", instance=runner.name, error=str(exc))
        for task in self._tasks:
            task.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_BUDGET / 2)
        if pending:
            self.log.error(
                "tasks ignored cancellation at shutdown", tasks=[t.get_name() for t in pending]
            )
        await self.notifier.drain(0.2) if hasattr(self, "notifier") else None
        await self._stack.aclose()


class Daemon:
    def __init__(self, config: Config, reload: Callable[[], Config]) -> None:
        self._config = config
        self._reload = reload
        self.log = get_logger()
        self.engine: Engine | None = None
        self._events: asyncio.Queue[str] = asyncio.Queue()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig, what in (
            (signal.SIGTERM, "SIGTERM"),
            (signal.SIGINT, "SIGINT"),
            (signal.SIGHUP, "SIGHUP"),
        ):
            loop.add_signal_handler(sig, self._events.put_nowait, what)
        self.engine = Engine(self._config, self.log)
        try:
            await self.engine.start()
        except Exception:
            await self.engine.stop("start-up failed")
            raise
        while True:
            waiter = loop.create_task(self._events.get())
            done, _ = await asyncio.wait(
                {waiter, self.engine.failed},  # type: ignore[type-var]
                return_when=asyncio.FIRST_COMPLETED,
            )
            if self.engine.failed in done:
                waiter.cancel()
                await self.engine.stop("internal error")
                return 1
            what = waiter.result()
            if what == "SIGHUP":
                await self._reload_config()
                continue
            self.log.info("stopping", signal=what)
            await self.engine.stop(what)
            self.log.info("stopped")
            return 0

    async def _reload_config(self) -> None:
        try:
            new = self._reload()
        except ConfigError as exc:
            self.log.error(
                "reload refused: invalid config; keeping the running one", problems=str(exc)
            )
            return
        except OSError as exc:
            self.log.error(
                "reload refused: cannot read config; keeping the running one", error=str(exc)
            )
            return
        if new == self._config:
            self.log.info("reload: config unchanged")
            return
        self.log.info("reload: config changed, restarting the election with it")
        assert self.engine is not None
        await self.engine.stop("reload")
        self._config = new
        self.engine = Engine(new, self.log)
        await self.engine.start()
