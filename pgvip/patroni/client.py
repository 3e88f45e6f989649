"""The Patroni REST API client: one keep-alive aiohttp session asking health and status questions.

Health endpoints (`/primary`, `/replica`) are judged by HTTP status alone, never by the body;
transport failures become UNKNOWN observations (see `pgvip.patroni.verdict`), never exceptions.
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from pgvip.patroni.verdict import (
    Observation,
    PatroniResponseError,
    PatroniStatus,
    PatroniUnavailable,
    Verdict,
    classify_exception,
    classify_status,
    decode_json,
    parse_patroni_status,
)

__all__ = ["PatroniClient", "PatroniClientError"]

Clock = Callable[[], float]

# Patroni's answers are a few KiB at most; a bigger body is garbage (or not Patroni).
MAX_BODY = 1 << 20
# Idle connections are kept for reuse between polls. Patroni 4 itself answers in HTTP/1.0 and
# closes every connection (its health answers have no Content-Length), so reuse only happens
# behind an HTTP/1.1 front (a TLS-terminating proxy), but reading every body to the end is
# what makes either case work.
KEEPALIVE_TIMEOUT = 30.0

# What a request may raise that means "no usable answer" rather than a bug in pgvip.
_REQUEST_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError, PatroniResponseError)


class PatroniClientError(Exception):
    """The client cannot be set up (bad URL, unreadable TLS files) or is used wrongly."""


def _target(url: URL) -> str:
    host = url.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port}"


def _member_base(api_url: str) -> URL:
    """A member's REST base URL from its `/cluster` `api_url` (which ends in `/patroni`)."""
    try:
        url = URL(api_url)
    except (TypeError, ValueError) as exc:
        raise PatroniClientError(f"member api_url is not a URL: {api_url!r}") from exc
    if not url.is_absolute() or url.scheme not in ("http", "https") or not url.host:
        raise PatroniClientError(f"member api_url must be an http(s) URL, got {api_url!r}")
    path = url.path.rstrip("/")
    if path.endswith("/patroni"):
        path = path[: -len("/patroni")]
    return url.with_path(path or "/").with_query(None).with_fragment(None)


def _lag_query(lag: str | int | None) -> dict[str, str]:
    return {} if lag is None else {"lag": str(lag)}


class PatroniClient:
    """Async context manager over one aiohttp session to one Patroni (plus member probes)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        base = URL(url)
        if not base.is_absolute() or base.scheme not in ("http", "https") or not base.host:
            raise PatroniClientError(f"Patroni URL must be http(s)://host:port, got {url!r}")
        if base.user or base.password:
            raise PatroniClientError("Patroni URL must not contain credentials; use username")
        if not timeout > 0:
            raise PatroniClientError(f"timeout must be > 0 seconds, got {timeout}")
        if key_file and not cert_file:
            raise PatroniClientError("key_file needs cert_file (the client certificate)")
        self.url = base
        self.timeout = timeout
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._headers: dict[str, str] = {}
        if username:
            # Built by hand: aiohttp 3.14 deprecates BasicAuth and older ones lack its successor.
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._session: aiohttp.ClientSession | None = None
        self._failsafe_active: bool | None = None
        self.last_status: PatroniStatus | None = None

    # -- lifecycle ----------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not (self._ca_file or self._cert_file):
            return True  # aiohttp's default: verify against the system CAs for https
        try:
            ctx = ssl.create_default_context(cafile=self._ca_file)
            if self._cert_file:
                ctx.load_cert_chain(self._cert_file, self._key_file)
        except (OSError, ssl.SSLError) as exc:
            raise PatroniClientError(f"cannot load Patroni TLS files: {exc}") from exc
        return ctx

    async def __aenter__(self) -> PatroniClient:
        connector = aiohttp.TCPConnector(
            ssl=self._ssl_context(),
            keepalive_timeout=KEEPALIVE_TIMEOUT,
            limit_per_host=4,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # Patroni's JSON is parsed by us; aiohttp must not guess encodings or follow redirects.
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def failsafe_active(self) -> bool | None:
        """failsafe_mode_is_active from the last good `patroni_status()` (None: never asked)."""
        return self._failsafe_active

    # -- plumbing -----------------------------------------------------------

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise PatroniClientError("PatroniClient used outside 'async with'")
        return self._session

    async def _get(
        self, url: URL, params: dict[str, str], timeout: float | None = None
    ) -> tuple[int, bytes]:
        """GET, reading the whole body so the connection goes back to the keep-alive pool;
        `timeout` overrides the client's for this request."""
        session = self._require_session()
        kw: dict[str, Any] = {} if timeout is None else {"timeout": aiohttp.ClientTimeout(timeout)}
        async with session.get(url, params=params, allow_redirects=False, **kw) as resp:
            body = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_BODY:
                    # Not reusable now; closing it beats draining megabytes of garbage.
                    resp.close()
                    raise PatroniResponseError(f"body larger than {MAX_BODY} bytes")
            return resp.status, bytes(body)

    async def _health(
        self, base: URL, path: str, label: str, params: dict[str, str], now_fn: Clock
    ) -> Observation:
        started = now_fn()
        try:
            status, _ = await self._get(base.with_path(base.path.rstrip("/") + path), params)
        except _REQUEST_ERRORS as exc:
            verdict, reason, cause = classify_exception(exc, target=f"{_target(base)}{path}")
        else:
            verdict, reason, cause = classify_status(label, status)
        done = now_fn()
        return Observation(
            verdict=verdict,
            reason=reason,
            cause=cause,
            at=done,
            latency=max(0.0, done - started),
            failsafe_active=self._failsafe_active,
        )

    async def _json(self, path: str, timeout: float | None = None) -> Any:
        url = self.url.with_path(self.url.path.rstrip("/") + path)
        try:
            status, body = await self._get(url, {}, timeout)
        except PatroniResponseError as exc:
            raise PatroniResponseError(f"{path}: {exc}") from exc
        except _REQUEST_ERRORS as exc:
            _, reason, cause = classify_exception(exc, target=f"{_target(self.url)}{path}")
            if cause == "invalid":  # it answered, but not in HTTP
                raise PatroniResponseError(f"{path}: {reason}") from exc
            raise PatroniUnavailable(reason, cause) from exc
        if status != 200:
            _, reason, cause = classify_status(path, status)
            raise PatroniUnavailable(f"{reason} (expected 200)", cause)
        return decode_json(body, path)

    # -- questions ------------------------------------------------------------

    async def primary(self, now_fn: Clock = time.monotonic) -> Observation:
        """Is this node the writable primary? (`GET /primary`: 200 yes, 503 no.)"""
        return await self._health(self.url, "/primary", "/primary", {}, now_fn)

    async def replica(
        self, lag: str | int | None = None, now_fn: Clock = time.monotonic
    ) -> Observation:
        """Is this node a healthy replica within `lag`? (`GET /replica?lag=...`.)"""
        return await self._health(self.url, "/replica", "/replica", _lag_query(lag), now_fn)

    async def member_replica(
        self, api_url: str, lag: str | int | None = None, now_fn: Clock = time.monotonic
    ) -> Observation:
        """Ask another member's REST API (its `api_url` from `/cluster`) `GET /replica?lag=...`."""
        try:
            base = _member_base(api_url)
        except PatroniClientError as exc:
            # api_url comes from /cluster, i.e. from the wire: garbage in it is an answer,
            # not a bug in pgvip.
            now = now_fn()
            return Observation(
                Verdict.UNKNOWN, str(exc), "invalid", now, 0.0, self._failsafe_active
            )
        label = f"{_target(base)}/replica"
        return await self._health(base, "/replica", label, _lag_query(lag), now_fn)

    async def patroni_status(self) -> PatroniStatus:
        """`GET /patroni`, parsed. Remembers failsafe_mode_is_active for later observations.

        Raises PatroniUnavailable (no answer, or not 200) or PatroniResponseError (garbage).
        """
        status = parse_patroni_status(await self._json("/patroni"))
        # Patroni omits the key unless failsafe is active, so absence means "not active".
        self._failsafe_active = bool(status.failsafe_mode_is_active)
        self.last_status = status
        return status

    async def cluster(self, timeout: float | None = None) -> dict[str, Any]:
        """`GET /cluster` as raw JSON (parsed by `pgvip.patroni.cluster`); `timeout` overrides
        the client's (`/cluster` reads the DCS, and blocks for its retries when it is down)."""
        obj = await self._json("/cluster", timeout)
        if not isinstance(obj, dict):
            raise PatroniResponseError(
                f"/cluster: expected a JSON object, got {type(obj).__name__}"
            )
        return obj
