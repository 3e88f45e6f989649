"""What a Patroni answer means: verdicts, observations, `/patroni` parsing and error classification.

Pure: no I/O, no clock, no aiohttp import (aiohttp errors are recognised by their stdlib bases or
class names), so the policy and its tests can use these types without a network stack.
"""

from __future__ import annotations

import enum
import errno
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Observation",
    "PatroniError",
    "PatroniResponseError",
    "PatroniStatus",
    "PatroniUnavailable",
    "Verdict",
    "classify_exception",
    "classify_status",
    "decode_json",
    "parse_patroni_body",
    "parse_patroni_status",
]

# Long exception texts (TLS, parser errors) are cut so that one log line stays one line.
_MAX_DETAIL = 160


class Verdict(enum.Enum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Observation:
    """One answer (or non-answer) from a Patroni health endpoint."""

    verdict: Verdict
    reason: str  # human text, e.g. "/primary 200", "connect refused: 127.0.0.1:8008"
    cause: str  # short stable label for metrics: "ok", "http_503", "timeout", "refused", ...
    at: float  # monotonic time of the answer
    latency: float  # seconds the request took
    failsafe_active: bool | None = None  # from the last /patroni, if known


class PatroniError(Exception):
    """Base of the errors raised when asking Patroni something fails."""


class PatroniResponseError(PatroniError):
    """Patroni answered, but the answer is not what its REST API documents (garbage)."""


class PatroniUnavailable(PatroniError):
    """No usable answer from Patroni: transport error, timeout or an unexpected HTTP status."""

    def __init__(self, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


# -- HTTP status ------------------------------------------------------------


def classify_status(path: str, status: int) -> tuple[Verdict, str, str]:
    """Map a health endpoint's HTTP status to (verdict, reason, cause).

    Patroni's health endpoints answer 200 for "yes" and 503 for "no"; anything else means the
    question was not answered, so the verdict is UNKNOWN (never NO: a proxy error or a rejected
    login says nothing about the node's role).
    """
    if status == 200:
        return Verdict.YES, f"{path} 200", "ok"
    if status == 503:
        return Verdict.NO, f"{path} 503", "http_503"
    if status in (401, 403):
        return (
            Verdict.UNKNOWN,
            f"{path} {status}: Patroni rejected the credentials (check patroni.username and "
            "patroni.password_file)",
            "auth",
        )
    return Verdict.UNKNOWN, f"{path} {status}", f"http_{status}"


# -- exceptions -------------------------------------------------------------

_REFUSED = {errno.ECONNREFUSED}
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
_DISCONNECTED = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}

# aiohttp classes recognised by name (see module docstring); any class in the MRO counts.
_AIOHTTP_TLS = {"ClientSSLError", "ServerFingerprintMismatch"}
_AIOHTTP_DNS = {"ClientConnectorDNSError"}
_AIOHTTP_DISCONNECTED = {"ServerDisconnectedError", "ClientConnectionResetError"}
_AIOHTTP_INVALID = {"ClientResponseError", "ClientPayloadError", "InvalidURL"}

_LABELS = {
    "timeout": "timeout",
    "tls": "TLS error",
    "dns": "DNS lookup failed",
    "refused": "connect refused",
    "unreachable": "host unreachable",
    "disconnected": "connection closed by Patroni",
    "invalid": "invalid response",
    "error": "request failed",
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (aiohttp's `os_error`, `__cause__`, `__context__`)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 8:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        wrapped = (getattr(cur, "os_error", None), getattr(cur, "certificate_error", None))
        for nxt in (*wrapped, cur.__cause__, cur.__context__):
            if isinstance(nxt, BaseException):
                todo.append(nxt)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _cause_of(exc: BaseException) -> tuple[str, BaseException]:
    chain = list(_chain(exc))
    # Order matters: aiohttp's TLS and DNS errors are also OSErrors with some errno.
    for e in chain:
        if isinstance(e, TimeoutError):
            return "timeout", e
    tls = [e for e in chain if isinstance(e, ssl.SSLError) or _names(e) & _AIOHTTP_TLS]
    if tls:
        # The innermost one carries the OpenSSL text ("certificate verify failed: ...").
        return "tls", tls[-1]
    dns = [e for e in chain if isinstance(e, socket.gaierror) or _names(e) & _AIOHTTP_DNS]
    if dns:
        return "dns", dns[-1]
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) in _REFUSED:
            return "refused", e
    for e in chain:
        if getattr(e, "errno", None) in _UNREACHABLE:
            return "unreachable", e
    for e in chain:
        if (
            isinstance(e, ConnectionResetError | BrokenPipeError | ConnectionAbortedError)
            or getattr(e, "errno", None) in _DISCONNECTED
            or _names(e) & _AIOHTTP_DISCONNECTED
        ):
            return "disconnected", e
    for e in chain:
        if isinstance(e, PatroniResponseError | ValueError) or _names(e) & _AIOHTTP_INVALID:
            return "invalid", e
    return "error", exc


def _detail(exc: BaseException) -> str:
    verify_message = getattr(exc, "verify_message", None)
    try:
        text = f"certificate verify failed: {verify_message}" if verify_message else str(exc)
    except Exception:  # a half-built third-party exception must not break error handling
        text = type(exc).__name__
    text = " ".join(text.split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return text


def classify_exception(exc: BaseException, target: str = "") -> tuple[Verdict, str, str]:
    """Map a failed request to (UNKNOWN, reason, cause).

    cause is one of "timeout", "tls", "dns", "refused", "unreachable", "disconnected",
    "invalid" or "error"; reason names the target and, where it helps, the underlying error.
    """
    cause, inner = _cause_of(exc)
    reason = _LABELS[cause]
    if target:
        reason = f"{reason}: {target}"
    if cause not in ("timeout", "refused"):
        detail = _detail(inner) or type(inner).__name__
        reason = f"{reason} ({detail})"
    return Verdict.UNKNOWN, reason, cause


# -- /patroni ---------------------------------------------------------------


@dataclass(frozen=True)
class PatroniStatus:
    """The fields pgvip uses from Patroni's `GET /patroni`."""

    role: str  # "primary", "replica", "standby_leader", ... ("master" before Patroni 3)
    state: str  # "running", "starting", "stopped", ...
    timeline: int | None
    failsafe_mode_is_active: bool | None  # Patroni only sends the key while failsafe is active
    dcs_last_seen: int | None  # epoch seconds of the last successful DCS contact
    name: str | None  # patroni.name: the member name


def _field(obj: dict[str, Any], key: str, types: tuple[type, ...], required: bool) -> Any:
    if key not in obj or obj[key] is None:
        if required:
            raise PatroniResponseError(f"/patroni: missing {key!r}")
        return None
    value = obj[key]
    # bool is an int in Python, but never a valid timeline or epoch.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = " or ".join(t.__name__ for t in types)
        raise PatroniResponseError(
            f"/patroni: {key!r} must be {want}, got {type(value).__name__} {_short(value)}"
        )
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_patroni_status(obj: object) -> PatroniStatus:
    """Parse the decoded JSON of `GET /patroni`; raises PatroniResponseError on anything else."""
    if not isinstance(obj, dict):
        raise PatroniResponseError(f"/patroni: expected a JSON object, got {type(obj).__name__}")
    role = _field(obj, "role", (str,), required=True)
    state = _field(obj, "state", (str,), required=True)
    timeline = _field(obj, "timeline", (int,), required=False)
    failsafe = _field(obj, "failsafe_mode_is_active", (bool,), required=False)
    dcs_last_seen = _field(obj, "dcs_last_seen", (int,), required=False)
    meta = _field(obj, "patroni", (dict,), required=False)
    name = _field(meta, "name", (str,), required=False) if meta is not None else None
    return PatroniStatus(
        role=role,
        state=state,
        timeline=timeline,
        failsafe_mode_is_active=failsafe,
        dcs_last_seen=dcs_last_seen,
        name=name,
    )


def decode_json(body: bytes, path: str) -> Any:
    """Decode a JSON body; raises PatroniResponseError naming the endpoint if it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise PatroniResponseError(f"{path}: body is not JSON ({_detail(exc)})") from exc


def parse_patroni_body(body: bytes) -> PatroniStatus:
    """Decode and parse a `/patroni` body; raises PatroniResponseError on anything unexpected."""
    return parse_patroni_status(decode_json(body, "/patroni"))
