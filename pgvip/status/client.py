"""Reading a pgvip daemon's status API from the command line: fetch `/status` (stdlib HTTP
only, so `pgvip status` starts fast) and render it as a table for a human.

A peer that answers but is not pgvip (Patroni on 8008, PostgreSQL, anything) is recognised
by the missing `Server: pgvip/...` header and `pgvip.version` field and reported as such.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

from pgvip.status import SERVER_PREFIX

__all__ = ["DEFAULT_URL", "StatusClientError", "fetch_status", "render_status"]

DEFAULT_URL = "http://127.0.0.1:8010"
Kind = Literal["unreachable", "not_pgvip", "auth", "tls", "bad_response"]


class StatusClientError(Exception):
    """The status could not be read; `kind` says why (for the exit code)."""

    def __init__(self, kind: Kind, message: str) -> None:
        super().__init__(message)
        self.kind: Kind = kind


def _status_url(url: str) -> str:
    base = url.rstrip("/")
    if base.endswith("/status"):
        base = base[: -len("/status")]
    if "://" not in base:
        base = f"http://{base}"
    return f"{base}/status"


def _is_pgvip(headers: Mapping[str, str] | Any, body: Any = None) -> bool:
    server = headers.get("Server") or ""
    if server.startswith(SERVER_PREFIX):
        return True
    return isinstance(body, dict) and isinstance(body.get("pgvip"), dict)


def fetch_status(
    url: str = DEFAULT_URL,
    *,
    timeout: float = 3.0,
    username: str | None = None,
    password: str | None = None,
    cafile: str | None = None,
    transitions: int | None = None,
) -> dict[str, Any]:
    """GET <url>/status and return the snapshot; raises StatusClientError."""
    target = _status_url(url)
    if transitions is not None:
        target += f"?transitions={int(transitions)}"
    headers = {"Accept": "application/json", "User-Agent": "pgvip-status"}
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    context = ssl.create_default_context(cafile=cafile) if target.startswith("https") else None
    request = urllib.request.Request(target, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            raw = response.read(16 << 20)
            answer_headers = response.headers
    except urllib.error.HTTPError as exc:
        raise _http_error(target, exc) from None
    except urllib.error.URLError as exc:
        raise _connect_error(target, exc.reason, timeout) from None
    except TimeoutError as exc:
        raise _connect_error(target, exc, timeout) from None
    except (http.client.HTTPException, ConnectionError) as exc:
        # Something answered, but not in HTTP (PostgreSQL's port, a raw TCP service).
        raise StatusClientError(
            "not_pgvip", f"{target}: the peer did not answer in HTTP ({exc!r}); is this pgvip?"
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not _is_pgvip(answer_headers, body):
        server = answer_headers.get("Server") or "no Server header"
        raise StatusClientError(
            "not_pgvip",
            f"{target} answered, but not as pgvip ({server}); "
            f"is this another service's port? pgvip's default is {DEFAULT_URL}",
        )
    if not isinstance(body, dict):
        raise StatusClientError("bad_response", f"{target}: pgvip answered with invalid JSON")
    return body


def _http_error(target: str, exc: urllib.error.HTTPError) -> StatusClientError:
    try:
        detail = json.loads(exc.read(65536)).get("error")
    except Exception:
        detail = None
    if not _is_pgvip(exc.headers):
        server = exc.headers.get("Server") or "no Server header"
        return StatusClientError(
            "not_pgvip",
            f"{target} answered HTTP {exc.code}, but not as pgvip ({server}); "
            f"is this another service's port? pgvip's default is {DEFAULT_URL}",
        )
    if exc.code == 401:
        return StatusClientError(
            "auth", f"{target}: authentication failed (give --username and --password-file)"
        )
    return StatusClientError(
        "bad_response", f"{target}: HTTP {exc.code}: {detail or exc.reason or 'error'}"
    )


def _connect_error(target: str, reason: object, timeout: float) -> StatusClientError:
    if isinstance(reason, ssl.SSLError | ssl.CertificateError):
        return StatusClientError("tls", f"{target}: TLS error: {reason}")
    if isinstance(reason, TimeoutError):
        return StatusClientError(
            "unreachable", f"{target}: no answer within {timeout:g}s; is pgvip running?"
        )
    if isinstance(reason, ConnectionRefusedError):
        return StatusClientError(
            "unreachable",
            f"{target}: connection refused; is pgvip running (systemctl status pgvip)?",
        )
    why = getattr(reason, "strerror", None) or str(reason)
    return StatusClientError("unreachable", f"{target}: cannot connect: {why}")


# -- the human table ----------------------------------------------------------------------


def _ago(at: Any, now: float) -> str:
    if not isinstance(at, int | float):
        return "never"
    return f"{_duration(max(0.0, now - at))} ago"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def _yesno(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _clock(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def render_status(snap: Mapping[str, Any], *, transitions: int = 10) -> str:
    """The snapshot as text for a human: where each VIP is, why, and what happened last."""
    raw_now = snap.get("now")
    now: float = float(raw_now) if isinstance(raw_now, int | float) else time.time()
    info = snap.get("pgvip") or {}
    lines: list[str] = []
    started = info.get("started_at")
    up = _duration(now - started) if isinstance(started, int | float) else "?"
    lines.append(
        f"pgvip {info.get('version', '?')} on {info.get('node', '?')} "
        f"(pid {info.get('pid', '?')}, up {up}){'' if info.get('ready') else ', STARTING'}"
    )
    pat = snap.get("patroni") or {}
    failsafe = {True: "ACTIVE", False: "off", None: "-"}.get(pat.get("failsafe_active"), "-")
    lines.append(
        f"patroni {pat.get('member') or '?'} at {pat.get('url', '?')}: "
        f"role {pat.get('role') or '?'}, state {pat.get('state') or '?'}, "
        f"timeline {pat.get('timeline') if pat.get('timeline') is not None else '?'}, "
        f"failsafe {failsafe}"
    )

    instances = snap.get("instances") or {}
    rows: list[list[str]] = []
    details: list[str] = []
    for name in ("rw", "ro"):
        inst = instances.get(name)
        if not inst:
            continue
        master = inst.get("master") or {}
        if master.get("is_self"):
            who = "this node"
        elif master.get("address"):
            who = f"{master['address']} (prio {master.get('priority')})"
        else:
            who = "none known"
        held = inst.get("held")
        state = inst.get("state", "?")
        here = _yesno(held)
        if state == "MASTER" and held is False:
            here = "NO (missing!)"
        elif state != "MASTER" and held:
            here = "YES (stale!)"
        rows.append(
            [
                name,
                state,
                str(inst.get("priority", "?")),
                ",".join(inst.get("vips") or []) or "-",
                here,
                who,
                _ago(master.get("heard_at"), now) if not master.get("is_self") else "-",
            ]
        )
        why = (inst.get("transitions") or [{}])[-1].get("reason", "")
        details.append(f"{name}: {state} {_last_change(inst, now)}" + (f": {why}" if why else ""))
        details.append(
            f"    eligible {_yesno(inst.get('eligible'))}: {inst.get('eligibility_reason') or '-'}"
        )
        if inst.get("priority_reason") not in (None, "configured"):
            details.append(f"    priority {inst.get('priority')}: {inst['priority_reason']}")
        poll = inst.get("poll")
        if poll:
            latency = poll.get("latency")
            ms = f"{latency * 1000:.0f} ms" if isinstance(latency, int | float) else "-"
            errors = poll.get("errors") or {}
            err = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"
            details.append(
                f"    last poll {poll.get('reason', '?')} ({poll.get('verdict', '?')}, {ms}, "
                f"{_ago(poll.get('at'), now)}); {poll.get('polls', 0)} polls, errors: {err}"
            )
        takeover = inst.get("last_takeover")
        if isinstance(takeover, int | float):
            details.append(f"    last takeover took {takeover:.2f}s (Patroni leader -> VIP held)")
        for c in inst.get("conflicts") or []:
            details.append(
                f"    CONFLICT: {c.get('mac')} claims {c.get('vip')} ({c.get('kind')}), "
                f"{c.get('count')} time(s), last {_ago(c.get('last_seen'), now)}"
            )
    if rows:
        lines.append("")
        lines += _table(["VIP", "STATE", "PRIO", "ADDRESS", "HERE", "MASTER", "HEARD"], rows)
        lines.append("")
        lines += details

    ro = snap.get("ro")
    if ro:
        lines.append("")
        lines.append(
            f"RO backends: {ro.get('healthy', 0)}/{ro.get('total', 0)} healthy, dataplane "
            f"{ro.get('dataplane') or 'none'} ({ro.get('dataplane_reason') or '-'}), "
            f"{'directing here' if ro.get('directing') else 'not directing here'}"
            + (", FALLBACK to primary" if ro.get("fallback_active") else "")
            + (f", {ro['apply_errors']} apply errors" if ro.get("apply_errors") else "")
        )
        if ro.get("forwarding_reason"):
            lines.append(f"RO forwarding: {ro['forwarding_reason']}")
        backends = ro.get("backends") or []
        if backends:
            lines += _table(
                ["MEMBER", "ADDRESS", "STATE", "HEALTHY", "WEIGHT", "LAG", "LAST PROBE", "ERROR"],
                [
                    [
                        str(b.get("member", "?")),
                        f"{b.get('address') or '-'}:{b.get('port') or '-'}",
                        str(b.get("state", "?")),
                        _yesno(b.get("healthy")),
                        str(b.get("weight", "-")),
                        _size(b.get("lag")),
                        _ago(b.get("last_probe_at"), now),
                        str(b.get("last_error") or "-"),
                    ]
                    for b in backends
                ],
            )
        else:
            lines.append("no backends")

    recent = (
        sorted(
            (
                (t.get("at", 0), name, t)
                for name, inst in instances.items()
                if inst
                for t in inst.get("transitions") or []
            ),
            key=lambda item: item[0],
        )[-transitions:]
        if transitions > 0
        else []
    )
    if recent:
        lines.append("")
        lines.append("Recent transitions (oldest first):")
        lines += _table(
            ["TIME", "VIP", "FROM", "TO", "REASON"],
            [
                [
                    _clock(at),
                    name,
                    str(t.get("from_state")),
                    str(t.get("to_state")),
                    t.get("reason", ""),
                ]
                for at, name, t in recent
            ],
        )
    return "\n".join(lines) + "\n"


def _last_change(inst: Mapping[str, Any], now: float) -> str:
    transitions = inst.get("transitions") or []
    at = transitions[-1].get("at") if transitions else None
    if not isinstance(at, int | float):
        return "(no transition yet)"
    return f"for {_duration(max(0.0, now - at))}"
