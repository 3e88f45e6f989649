"""The pgvip process: runs the engine (engine.py), rebuilding it on a reload that changes
it, and owns what outlives a reload: signals (SIGTERM/SIGINT release and exit, SIGHUP
reloads), metrics, the status API, systemd notification and the watchdog."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgvip.config import Config, ConfigError
from pgvip.daemon import loop_stall
from pgvip.daemon.blueprint import check_buildable
from pgvip.daemon.engine import Engine
from pgvip.daemon.host_state import (
    HostStateError,
    check_reload,
    claim_engine,
    claim_instance,
    release,
)
from pgvip.daemon.l3.engine import L3Engine
from pgvip.daemon.loop_stall import stall_master_down, stall_threshold
from pgvip.daemon.reconciler import VIP_RECONCILE_INTERVAL
from pgvip.daemon.ro.director import DirectorError
from pgvip.daemon.snapshot import DaemonFacts, build_snapshot
from pgvip.dataplane.addresses import AddressError
from pgvip.dataplane.announce import AnnounceError
from pgvip.dataplane.balancer import LoadBalancerError
from pgvip.dataplane.bgp import BgpSpeakerError
from pgvip.dataplane.interfaces import InterfaceError
from pgvip.dataplane.vrrp_sockopts import VrrpSocketError
from pgvip.log import configure as configure_logging
from pgvip.log import get_logger
from pgvip.naming import StateNames
from pgvip.patroni.client import PatroniClientError
from pgvip.status.server import StatusServerError
from pgvip.vrrp.actions import Transition

if TYPE_CHECKING:
    from pgvip.status import Snapshot
    from pgvip.status.metrics import Metrics
    from pgvip.status.sdnotify import Liveness, SdNotifier
    from pgvip.status.server import StatusServer

# Start-up failures that come from the environment, not from a bug: `pgvip run` reports
# them in one line and exits 2 (no restart loop under systemd).
STARTUP_ERRORS: tuple[type[Exception], ...] = (
    AddressError,
    AnnounceError,
    BgpSpeakerError,
    DirectorError,
    InterfaceError,
    LoadBalancerError,
    PatroniClientError,
    StatusServerError,
    VrrpSocketError,
    ConfigError,
    HostStateError,
)


class Daemon:
    """The process: the engine (rebuilt on a reload that changes it), plus what outlives a
    reload: metrics, the status API, systemd notification and the watchdog."""

    def __init__(self, config: Config, reload: Callable[[], Config]) -> None:
        self.config = config
        self._config = config
        self._reload = reload
        self.log = get_logger()
        self.engine: Engine | L3Engine | None = None
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
        self.stalls = loop_stall.StallMeter()

    def snapshot(self) -> Snapshot:
        facts = DaemonFacts(
            started_at=self.started_at,
            ready=self.ready,
            patroni_url=self.config.patroni.url,
            loop_stalls=self.stalls.count,
            loop_stall_max_s=self.stalls.max_late_s,
        )
        return build_snapshot(self.engine, facts)

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

    def _on_transition(self, _transition: Transition) -> None:
        if self.ready:
            self.sd.status(self._status_line())

    async def _start_engine(self, config: Config) -> Engine | L3Engine:
        engine: Engine | L3Engine
        if config.rw.announce == "bgp":
            engine = L3Engine(config, self.log, self.metrics)
        else:
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
        # Before the status port: a second daemon of one instance says that, not "port in use".
        claim = claim_instance(StateNames(self._config.instance.name))
        try:
            release(claim_engine(self._config))  # the same: the engine claims them for good
            return await self._run_claimed()
        finally:
            claim.release()

    async def _run_claimed(self) -> int:
        loop = asyncio.get_running_loop()
        await self._start_status()
        try:
            self.engine = await self._start_engine(self._config)
        except Exception:
            await self._stop_status()
            raise
        self.liveness.expect("reconcile", 3 * VIP_RECONCILE_INTERVAL + 1)
        self._daemon_tasks.append(loop.create_task(self.sd.watchdog(self.liveness.problem)))
        self._daemon_tasks.append(
            loop.create_task(
                loop_stall.watch(
                    self.stalls,
                    threshold=lambda: stall_threshold(self._config),
                    master_down=lambda: stall_master_down(self._config),
                    log=self.log,
                    metrics=self.metrics,
                ),
                name="loop-stall-watch",
            )
        )
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
            check_buildable(new)  # refused here, not halfway through a rebuild
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
        if new.instance != self._config.instance:
            self.log.error(
                "reload refused: instance.name names this daemon's host state (nftables tables, "
                "claims) and changes only with a restart; keeping the running config"
            )
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
        try:
            check_reload(new, self._config)
        except HostStateError as exc:
            self.log.error("reload refused: keeping the running config", problem=str(exc))
            self.sd.ready(self._status_line())
            return
        self.log.info("reload: VRRP or network settings changed, restarting the election")
        await self.engine.stop("reload")
        self._config = self.config = new
        self.engine = await self._start_engine(new)
        self.sd.ready(self._status_line())
