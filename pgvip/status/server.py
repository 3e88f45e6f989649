"""The status HTTP API in the daemon (aiohttp): `GET /status` (JSON snapshot), `GET /metrics`
(Prometheus) and `GET /health` (liveness), with optional basic auth and TLS.

Every error is a small JSON document with a 4xx/5xx status, never a traceback, and every
response carries `Server: pgvip/<version>` so `pgvip status` can tell it from another service.
"""

from __future__ import annotations

import base64
import binascii
import enum
import errno
import hmac
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from pgvip import __version__
from pgvip.config import ConfigError, StatusConfig, read_password_file
from pgvip.status import server_header

if TYPE_CHECKING:
    from pgvip.status.metrics import Metrics

__all__ = ["MAX_TRANSITIONS", "StatusServer", "StatusServerError"]

MAX_TRANSITIONS = 1000  # upper bound of ?transitions=N
SHUTDOWN_TIMEOUT = 0.2  # seconds for open connections at stop: the daemon exits within 1 s
_OPEN_PATHS = frozenset({"/health"})  # liveness probes carry no credentials
_REALM = 'Basic realm="pgvip", charset="UTF-8"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusServerError(Exception):
    """The status API cannot start: port in use, bad address, unusable TLS or password file.
    The message names the setting to change; the daemon exits 2 with it."""


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_error(host: str, port: int, exc: OSError) -> StatusServerError:
    where = _endpoint(host, port)
    if exc.errno == errno.EADDRINUSE:
        why = (
            f"port {port} is already in use on {host} (another pgvip instance, or Patroni's "
            "REST API?); stop that process or set status.port (each pgvip instance on a host "
            "needs its own)"
        )
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this host; set status.listen"
    elif exc.errno == errno.EACCES:
        why = f"permission denied for port {port} (below 1024 needs CAP_NET_BIND_SERVICE)"
    else:
        why = exc.strerror or str(exc)
    return StatusServerError(f"status API cannot listen on {where}: {why}")


def _json_default(obj: object) -> Any:
    # Forgiving on purpose: the snapshot builder may hand over addresses, enums or sets.
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if isinstance(
        obj,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network,
    ):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": message, "status": status})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def _limit_transitions(snapshot: Mapping[str, Any], n: int) -> dict[str, Any]:
    """A copy of the snapshot with at most the `n` newest transitions per instance."""
    out = dict(snapshot)
    instances = snapshot.get("instances")
    if isinstance(instances, Mapping):
        trimmed: dict[str, Any] = {}
        for name, inst in instances.items():
            if isinstance(inst, Mapping) and isinstance(inst.get("transitions"), list):
                inst = {**inst, "transitions": inst["transitions"][-n:] if n else []}
            trimmed[name] = inst
        out["instances"] = trimmed
    return out


class StatusServer:
    """Serves the API on `config.listen`:`config.port` (port 0 picks a free one)."""

    def __init__(
        self,
        config: StatusConfig,
        snapshot: Callable[[], Mapping[str, Any]],
        metrics: Metrics,
        *,
        health: Callable[[], str | None] | None = None,
        log: Any = None,
    ) -> None:
        """`snapshot` returns the current `pgvip.status.Snapshot`; `health`, if given,
        returns None while the daemon is healthy or a short problem text (then /health
        answers 503)."""
        self._config = config
        self._snapshot = snapshot
        self._metrics = metrics
        self._health = health
        if log is None:
            from pgvip.log import get_logger

            log = get_logger(component="status")
        self._log = log
        self._runner: web.AppRunner | None = None
        self._credentials: bytes | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0); only valid after start()."""
        if self._port is None:
            raise RuntimeError("StatusServer.port read before start()")
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self._config.cert_file else "http"
        host = str(self._config.listen)
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"{scheme}://{_endpoint(host, self.port)}"

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and serve; raises StatusServerError with a message naming the setting."""
        if self._runner is not None:
            return
        cfg = self._config
        self._credentials = self._load_credentials()
        ssl_context = self._load_tls()
        self._warn_if_exposed()

        app = web.Application(middlewares=[self._errors, self._auth])
        app.router.add_get("/status", self._get_status)
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/metrics", self._get_metrics)
        app.on_response_prepare.append(self._stamp)
        self._metrics_handler: Handler = self._metrics.aiohttp_handler()

        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        host = str(cfg.listen)
        site = web.TCPSite(runner, host, cfg.port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise _bind_error(host, cfg.port, exc) from exc
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._log.info(
            "status API listening",
            url=self.url,
            tls=ssl_context is not None,
            auth=self._credentials is not None,
        )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _load_credentials(self) -> bytes | None:
        cfg = self._config
        if not cfg.username:
            return None
        if not cfg.password_file:
            raise StatusServerError("status.username is set but status.password_file is not")
        try:
            password = read_password_file(cfg.password_file, "status.password_file")
        except ConfigError as exc:
            raise StatusServerError(str(exc)) from exc
        return f"{cfg.username}:{password}".encode()

    def _load_tls(self) -> ssl.SSLContext | None:
        cfg = self._config
        if not cfg.cert_file:
            return None
        if not cfg.key_file:
            raise StatusServerError("status.cert_file is set but status.key_file is not")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            raise StatusServerError(
                f"status.cert_file {cfg.cert_file} / status.key_file {cfg.key_file}: "
                f"cannot load the TLS certificate: {why}"
            ) from exc
        return context

    def _warn_if_exposed(self) -> None:
        if self._config.listen.is_loopback:
            return
        if self._credentials is None or not self._config.cert_file:
            self._log.warning(
                "status API reachable from the network without "
                + ("basic auth" if self._credentials is None else "TLS (the password is clear)"),
                listen=str(self._config.listen),
                hint="set status.username/password_file and status.cert_file/key_file",
            )

    # -- middleware -----------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
            if exc.status == 401:
                headers["WWW-Authenticate"] = _REALM
            message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
            return _error(exc.status, message.removeprefix(f"{exc.status}: "), headers)
        except Exception as exc:
            self._log.error(
                "status API request failed",
                path=request.path,
                error=f"{type(exc).__name__}: {exc}",
            )
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._credentials is None or request.path in _OPEN_PATHS:
            return await handler(request)
        given = self._given_credentials(request.headers.get("Authorization", ""))
        if given is None or not hmac.compare_digest(given, self._credentials):
            raise web.HTTPUnauthorized(text="authentication required (HTTP basic auth)")
        return await handler(request)

    @staticmethod
    def _given_credentials(header: str) -> bytes | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or not value:
            return None
        try:
            return base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = server_header(__version__)
        response.headers.setdefault("Cache-Control", "no-store")

    # -- handlers -------------------------------------------------------------------------

    async def _get_status(self, request: web.Request) -> web.Response:
        snapshot: Mapping[str, Any] = self._snapshot()
        raw = request.query.get("transitions")
        if raw is not None:
            try:
                n = int(raw)
            except ValueError:
                n = -1
            if not 0 <= n <= MAX_TRANSITIONS:
                raise web.HTTPBadRequest(
                    text=f"transitions must be an integer 0-{MAX_TRANSITIONS}, got {raw[:40]!r}"
                )
            snapshot = _limit_transitions(snapshot, n)
        try:
            body = json.dumps(snapshot, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RuntimeError(f"the status snapshot is not valid JSON: {exc}") from exc
        return web.Response(text=body, content_type="application/json")

    async def _get_health(self, request: web.Request) -> web.Response:
        problem = self._health() if self._health is not None else None
        if problem:
            body = json.dumps({"status": "unhealthy", "problem": problem})
            return web.Response(status=503, text=body, content_type="application/json")
        return web.Response(text='{"status": "ok"}', content_type="application/json")

    async def _get_metrics(self, request: web.Request) -> web.StreamResponse:
        return await self._metrics_handler(request)
