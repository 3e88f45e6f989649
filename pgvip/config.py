"""pgvip's configuration: one declarative schema, read from TOML, `PGVIP_*` env and CLI flags.

Precedence is flags > env > file > defaults. Every problem (unknown key, bad value, impossible
combination) is collected and reported together, each naming the key, where it came from and
the offending value. Decisions worth knowing:

* A VIP given without a prefix gets /32 (IPv4) or /128 (IPv6): a host address, which survives
  the removal of the interface's primary address (a VIP inside its subnet would not).
* `announce.garp_interval` below 0.1 s is an error; below 1.0 s it is a warning, because
  neighbours ignore a gratuitous ARP that arrives within `locktime` (1 s) of the last update.
* `status.port` defaults to 8010 (8008 is Patroni's REST API, 8009 is often its second one).
* An empty env value (`PGVIP_RO_VIP=`) unsets an optional key (e.g. no RO VIP) and empties a list.
* Nothing here touches the filesystem except reading the TOML file itself: TLS and password
  files are checked when they are used (see `read_password_file`).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_CONFIG",
    "FLAG_KEYS",
    "SCHEMA",
    "AnnounceConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "LogConfig",
    "NotifyConfig",
    "PatroniConfig",
    "RoConfig",
    "RwConfig",
    "Setting",
    "StatusConfig",
    "VrrpConfig",
    "config_from_mapping",
    "load_config",
    "read_password_file",
    "reference_markdown",
]

DEFAULT_CONFIG_PATH = Path("/etc/pgvip/pgvip.toml")
ENV_PREFIX = "PGVIP_"
ENV_CONFIG = "PGVIP_CONFIG"
# PGVIP_* variables that are not settings: the config path, and scripts/setup.sh's knobs.
ENV_NOT_SETTINGS = frozenset({ENV_CONFIG, "PGVIP_VENV", "PGVIP_SKIP_APT"})

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Kind = Literal["string", "integer", "number", "boolean", "list", "size"]
Severity = Literal["error", "warning"]


# -- problems -----------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, with enough context to fix it."""

    key: str  # "rw.vrid"; "" when the problem is not about one key (syntax error, unknown env)
    source: str  # "/etc/pgvip/pgvip.toml", "env PGVIP_RW_VRID", "--rw-vrid", "default" or ""
    value: str | None  # the offending value as written (TOML syntax); None if not applicable
    message: str
    suggestion: str | None = None  # shown as "(did you mean X?)"
    severity: Severity = "error"

    def __str__(self) -> str:
        head = f"{self.source}: " if self.source else ""
        body = self.message if self.value is None else f"{self.key} = {self.value}: {self.message}"
        tail = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        return f"{head}{body}{tail}"


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every error (and warning) found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        ordered = sorted(problems, key=lambda p: p.severity != "error")
        self.problems: list[ConfigProblem] = ordered
        super().__init__(str(self))

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for p in self.problems if p.severity == "error"]

    def __str__(self) -> str:
        return "\n".join(
            str(p) if p.severity == "error" else f"warning: {p}" for p in self.problems
        )


class _Invalid(Exception):
    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion


# -- value checks (each converts a typed value or raises _Invalid) ---------------

Check = Callable[[Any], Any]


def _int_range(lo: int, hi: int) -> Check:
    def check(v: int) -> int:
        if not lo <= v <= hi:
            raise _Invalid(f"must be {lo}-{hi}")
        return v

    return check


def _float_range(lo: float, hi: float, *, lo_open: bool = False) -> Check:
    low = f"> {lo:g}" if lo_open else f">= {lo:g}"

    def check(v: float) -> float:
        v = float(v)
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise _Invalid(f"must be {low} and <= {hi:g} (seconds)")
        return v

    return check


def _choice(*options: str) -> Check:
    def check(v: str) -> str:
        low = v.strip().lower()
        if low in options:
            return low
        close = difflib.get_close_matches(low, options, n=1, cutoff=0.5)
        raise _Invalid(f"must be one of {', '.join(options)}", close[0] if close else None)

    return check


def _vip(v: str) -> IPInterface:
    try:
        iface = ipaddress.ip_interface(v.strip())
    except ValueError:
        raise _Invalid("not an IPv4 or IPv6 address with an optional /prefix") from None
    ip = iface.ip
    for bad, what in (
        (ip.is_multicast, "a multicast"),
        (ip.is_unspecified, "the unspecified"),
        (ip.is_loopback, "a loopback"),
    ):
        if bad:
            raise _Invalid(f"cannot be {what} address")
    net = iface.network
    if isinstance(iface, ipaddress.IPv4Interface) and net.prefixlen < 31:
        if ip == net.network_address:
            raise _Invalid(f"is the network address of {net}")
        if ip == net.broadcast_address:
            raise _Invalid(f"is the broadcast address of {net}")
    v6 = isinstance(iface, ipaddress.IPv6Interface)
    if v6 and net.prefixlen < 127 and ip == net.network_address:
        raise _Invalid(f"is the subnet-router anycast address of {net}")
    return iface


def _unicast(v: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(v.strip())
    except ValueError:
        raise _Invalid(f"{v!r} is not an IPv4 or IPv6 address (no /prefix here)") from None
    if ip.is_multicast or ip.is_unspecified:
        raise _Invalid(f"{ip} must be a unicast address")
    return ip


def _unicast_list(v: list[str]) -> tuple[IPAddress, ...]:
    return tuple(_unicast(item) for item in v)


def _listen(v: str) -> IPAddress:
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        raise _Invalid("not an IPv4 or IPv6 address") from None


def _url(v: str) -> str:
    v = v.strip()
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        raise _Invalid(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Invalid("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8008")
    if parts.username is not None or parts.password is not None:
        raise _Invalid(
            "must not contain credentials: use patroni.username and patroni.password_file"
        )
    if parts.query or parts.fragment:
        raise _Invalid("must not have a ?query or #fragment")
    if port == 0:
        raise _Invalid("port must be 1-65535")
    return v


_IFNAME = re.compile(r"^[^/:\s]{1,15}$")


def _ifname(v: str) -> str:
    if not _IFNAME.match(v) or v in (".", ".."):
        raise _Invalid("must be an interface name of 1-15 characters without '/', ':' or spaces")
    return v


def _nonempty(v: str) -> str:
    if not v.strip():
        raise _Invalid("must not be empty")
    return v


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?b)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


def _size(v: int | str) -> int:
    if isinstance(v, int):
        if v < 0:
            raise _Invalid("must be >= 0 bytes")
        return v
    m = _SIZE.match(v)
    if not m:
        raise _Invalid("must be a byte count or a size like 16MB (units B, kB, MB, GB, TB)")
    return int(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]


# -- schema -----------------------------------------------------------------------


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Setting:
    """One configuration key: where it lives, its type, default, check and documentation."""

    section: str
    key: str
    kind: Kind
    default: Any  # REQUIRED, None (optional, unset), or a raw value as it would be written
    help: str
    check: Check | None = None
    flag: str | None = None  # key of the CLI flag mapping (FLAG_KEYS), e.g. "rw_vip"
    secret: bool = False
    unit: str = ""  # for the reference: "seconds", "CIDR", ...

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"

    @property
    def option(self) -> str | None:
        return f"--{self.flag.replace('_', '-')}" if self.flag else None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _s(section: str, key: str, kind: Kind, default: Any, help: str, **kw: Any) -> Setting:
    return Setting(section, key, kind, default, help, **kw)


_SECONDS_30 = _float_range(0, 30, lo_open=True)
_SECONDS_60 = _float_range(0, 60, lo_open=True)
_SECONDS_HOUR = _float_range(0, 3600, lo_open=True)
_COUNT = _int_range(1, 100)
_PORT = _int_range(1, 65535)

# fmt: off
# One row per key; ruff would explode each row into a dozen lines, which hides the table.
SCHEMA: tuple[Setting, ...] = (
    # [patroni]
    _s("patroni", "url", "string", REQUIRED, "This node's Patroni REST API, http(s)://host:port.",
       check=_url, flag="patroni_url", unit="URL"),
    _s("patroni", "ca_file", "string", None, "TLS: verify Patroni's certificate with this CA.",
       unit="path"),
    _s("patroni", "cert_file", "string", None,
       "TLS client certificate (PEM; may also hold the key).", unit="path"),
    _s("patroni", "key_file", "string", None, "TLS client key, if not inside cert_file.",
       unit="path"),
    _s("patroni", "username", "string", None,
       "REST API basic-auth user (Patroni restapi.authentication).", check=_nonempty),
    _s("patroni", "password", "string", None,
       "REST API password; prefer password_file, which keeps it out of the config.",
       secret=True),
    _s("patroni", "password_file", "string", None,
       "File holding the REST API password (read when the daemon starts).", unit="path"),
    _s("patroni", "timeout", "number", 1.0, "Seconds per request (> 0, <= 30).",
       check=_SECONDS_30, unit="seconds"),
    _s("patroni", "poll_interval", "number", 0.25, "Seconds between polls of /primary.",
       check=_SECONDS_60, unit="seconds"),
    _s("patroni", "fast_poll_interval", "number", 0.05,
       "Seconds between polls of /primary while no node holds the RW VIP (its master resigned "
       "or went silent), so the new leader is seen at once. Capped at poll_interval.",
       check=_SECONDS_60, unit="seconds"),
    _s("patroni", "fast_poll_window", "number", 60.0,
       "Poll fast for at most this many seconds after the RW master went missing, then fall "
       "back to poll_interval (a cluster without a leader for long is not worth 20 polls/s).",
       check=_SECONDS_HOUR, unit="seconds"),
    _s("patroni", "rise", "integer", 1,
       "Consecutive 'yes' answers before the node may hold the RW VIP.", check=_COUNT),
    _s("patroni", "fall", "integer", 3,
       "Consecutive 'cannot ask Patroni' answers before the node must release the RW VIP. "
       "A 'no' (HTTP 503) releases at once.", check=_COUNT),
    _s("patroni", "grace", "number", None,
       "Also release after this many seconds without a definite answer, if sooner than fall.",
       check=_SECONDS_HOUR, unit="seconds"),
    _s("patroni", "failsafe_keep", "boolean", True,
       "Keep the RW VIP while Patroni is unreachable if its last /patroni said failsafe mode "
       "was active (Patroni keeps the primary running through a DCS outage then)."),
    _s("patroni", "failsafe_max", "number", 30.0,
       "Upper bound, in seconds since the last definite answer, on the failsafe_keep exception.",
       check=_SECONDS_HOUR, unit="seconds"),
    # [vrrp]
    _s("vrrp", "interface", "string", REQUIRED, "Interface that carries the VIPs and VRRP.",
       check=_ifname, flag="interface"),
    _s("vrrp", "advert_int", "integer", 100,
       "VRRP advertisement interval in centiseconds (1-4095), as VRRPv3 carries it.",
       check=_int_range(1, 4095), unit="centiseconds"),
    _s("vrrp", "preempt", "boolean", True,
       "A higher-priority eligible node takes the VIP over from a lower one."),
    _s("vrrp", "preempt_delay", "number", 0.0, "Seconds to wait before preempting.",
       check=_float_range(0, 1000), unit="seconds"),
    _s("vrrp", "unicast_src", "string", None,
       "Unicast mode: our source address (required with unicast_peers).", check=_unicast,
       unit="address"),
    _s("vrrp", "unicast_peers", "list", [],
       "Unicast mode: the peers' addresses (multicast 224.0.0.18 / ff02::12 when empty).",
       check=_unicast_list, unit="addresses"),
    # [rw]
    _s("rw", "vip", "string", REQUIRED,
       "The RW VIP, held by the Patroni leader: address[/prefix], IPv4 or IPv6 "
       "(no prefix: /32 or /128).", check=_vip, flag="rw_vip", unit="CIDR"),
    _s("rw", "vrid", "integer", 50, "VRRP router id of the RW VIP (1-255), unique on the LAN.",
       check=_int_range(1, 255), flag="rw_vrid"),
    _s("rw", "priority", "integer", 254,
       "VRRP priority of this node for the RW VIP (1-254). Only the Patroni leader is eligible, "
       "so all nodes may share one value; a high one keeps Skew_Time (the takeover delay after "
       "a priority-0 advert) short: 0.004 s at 254 with advert_int 100 (0.22 s at 200).",
       check=_int_range(1, 254), flag="priority"),
    # [ro]
    _s("ro", "vip", "string", None,
       "The RO VIP, load-balanced over the replicas; no RO VIP when unset.", check=_vip,
       flag="ro_vip", unit="CIDR"),
    _s("ro", "vrid", "integer", 51, "VRRP router id of the RO VIP (1-255), not rw.vrid.",
       check=_int_range(1, 255), flag="ro_vrid"),
    _s("ro", "priority_replica", "integer", 150,
       "VRRP priority for the RO VIP while this node is a replica.", check=_int_range(1, 254)),
    _s("ro", "priority_leader", "integer", 50,
       "VRRP priority for the RO VIP while this node is the leader (the director is normally "
       "a replica).", check=_int_range(1, 254)),
    _s("ro", "port", "integer", 5432, "PostgreSQL port behind the RO VIP.", check=_PORT),
    _s("ro", "max_lag", "size", "16MB",
       "Largest replication lag of a backend, in bytes or Patroni units (1MB, 16MB, ...).",
       check=_size, unit="bytes"),
    _s("ro", "probe_sql", "boolean", False,
       "Also check each backend with a SQL query, not only Patroni's /replica."),
    _s("ro", "probe_timeout", "number", 1.0, "Seconds per backend probe.", check=_SECONDS_30,
       unit="seconds"),
    _s("ro", "rise", "integer", 2, "Consecutive good probes before a backend gets traffic.",
       check=_COUNT),
    _s("ro", "fall", "integer", 2, "Consecutive bad probes before a backend is removed.",
       check=_COUNT),
    _s("ro", "drain_timeout", "number", 10.0,
       "Seconds a removed backend keeps its established connections.",
       check=_float_range(0, 3600), unit="seconds"),
    _s("ro", "fallback", "string", "primary",
       "With no healthy replica: send RO traffic to the primary, or none.",
       check=_choice("primary", "none")),
    _s("ro", "include_primary", "boolean", False,
       "Balance over the primary as well as the replicas."),
    _s("ro", "dataplane", "string", "auto",
       "RO load balancer: ipvs, nftables, or auto (IPVS when the kernel has it).",
       check=_choice("auto", "ipvs", "nftables")),
    _s("ro", "scheduler", "string", "rr", "Scheduler, in IPVS words: rr, wrr, lc, wlc, sh, mh.",
       check=_choice("rr", "wrr", "lc", "wlc", "sh", "mh")),
    _s("ro", "forwarding", "string", "nat",
       "Forwarding method: nat, dr (direct routing) or tun; nftables supports only nat.",
       check=_choice("dr", "nat", "tun")),
    _s("ro", "persistence_timeout", "integer", 0,
       "Seconds a client sticks to its backend; 0 = off.", check=_int_range(0, 86400),
       unit="seconds"),
    _s("ro", "poll_interval", "number", 1.0, "Seconds between backend probes.",
       check=_SECONDS_60, unit="seconds"),
    # [announce]
    _s("announce", "garp_count", "integer", 3,
       "Gratuitous ARPs / unsolicited NAs sent on becoming MASTER (0-100).",
       check=_int_range(0, 100)),
    _s("announce", "garp_interval", "number", 1.1,
       "Seconds between them; below 1.0 neighbours may ignore repeats, below 0.1 is an error.",
       check=_float_range(0.1, 60), unit="seconds"),
    _s("announce", "garp_refresh", "number", 0.0,
       "Seconds between re-announcements while MASTER; 0 = off.",
       check=_float_range(0, 86400), unit="seconds"),
    # [notify]
    _s("notify", "command", "string", None,
       "Run as: command INSTANCE STATE PRIORITY on every transition (keepalived style); "
       "may carry tokens, so it is redacted.", check=_nonempty, secret=True),
    _s("notify", "timeout", "number", 10.0, "Seconds before the notify command is killed.",
       check=_SECONDS_HOUR, unit="seconds"),
    # [log]
    _s("log", "format", "string", "auto",
       "auto (console on a TTY, JSON otherwise), console or json.",
       check=_choice("auto", "console", "json")),
    _s("log", "level", "string", "info", "debug, info, warning, error or critical.",
       check=_choice("debug", "info", "warning", "error", "critical")),
    # [status]
    _s("status", "listen", "string", "127.0.0.1", "Address of the status/metrics HTTP API.",
       check=_listen, unit="address"),
    _s("status", "port", "integer", 8010,
       "Port of the status/metrics HTTP API (8010: 8008 is Patroni's).", check=_PORT),
    _s("status", "username", "string", None, "Basic-auth user for the status API.",
       check=_nonempty),
    _s("status", "password_file", "string", None,
       "File holding the status API password (with username).", unit="path"),
    _s("status", "cert_file", "string", None, "Serve the status API over TLS with this cert.",
       unit="path"),
    _s("status", "key_file", "string", None, "Key of status.cert_file.", unit="path"),
)
# fmt: on

SETTINGS: dict[str, Setting] = {s.name: s for s in SCHEMA}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SCHEMA))
ENV_NAMES: dict[str, Setting] = {s.env: s for s in SCHEMA}
FLAG_KEYS: dict[str, str] = {s.flag: s.name for s in SCHEMA if s.flag}


# -- the typed result ------------------------------------------------------------------


@dataclass(frozen=True)
class PatroniConfig:
    url: str
    ca_file: str | None
    cert_file: str | None
    key_file: str | None
    username: str | None
    password: str | None = field(repr=False)
    password_file: str | None
    timeout: float
    poll_interval: float
    fast_poll_interval: float
    fast_poll_window: float
    rise: int
    fall: int
    grace: float | None
    failsafe_keep: bool
    failsafe_max: float


@dataclass(frozen=True)
class VrrpConfig:
    interface: str
    advert_int: int
    preempt: bool
    preempt_delay: float
    unicast_src: IPAddress | None
    unicast_peers: tuple[IPAddress, ...]


@dataclass(frozen=True)
class RwConfig:
    vip: IPInterface
    vrid: int
    priority: int


@dataclass(frozen=True)
class RoConfig:
    vip: IPInterface | None
    vrid: int
    priority_replica: int
    priority_leader: int
    port: int
    max_lag: int  # bytes
    probe_sql: bool
    probe_timeout: float
    rise: int
    fall: int
    drain_timeout: float
    fallback: str
    include_primary: bool
    dataplane: str
    scheduler: str
    forwarding: str
    persistence_timeout: int
    poll_interval: float


@dataclass(frozen=True)
class AnnounceConfig:
    garp_count: int
    garp_interval: float
    garp_refresh: float


@dataclass(frozen=True)
class NotifyConfig:
    command: str | None = field(repr=False)
    timeout: float


@dataclass(frozen=True)
class LogConfig:
    format: str
    level: str


@dataclass(frozen=True)
class StatusConfig:
    listen: IPAddress
    port: int
    username: str | None
    password_file: str | None
    cert_file: str | None
    key_file: str | None


SECTION_TYPES: dict[str, type] = {
    "patroni": PatroniConfig,
    "vrrp": VrrpConfig,
    "rw": RwConfig,
    "ro": RoConfig,
    "announce": AnnounceConfig,
    "notify": NotifyConfig,
    "log": LogConfig,
    "status": StatusConfig,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True)
class Config:
    patroni: PatroniConfig
    vrrp: VrrpConfig
    rw: RwConfig
    ro: RoConfig
    announce: AnnounceConfig
    notify: NotifyConfig
    log: LogConfig
    status: StatusConfig
    path: Path | None = None  # the TOML file read, if any
    warnings: tuple[ConfigProblem, ...] = field(default=(), compare=False)

    def redacted_dict(self) -> dict[str, Any]:
        """JSON-ready settings for the status API, with secrets replaced by "<redacted>"."""
        out: dict[str, Any] = {"config_file": None if self.path is None else str(self.path)}
        for setting in SCHEMA:
            value = getattr(getattr(self, setting.section), setting.key)
            if setting.secret and value is not None:
                value = "<redacted>"
            out.setdefault(setting.section, {})[setting.key] = _jsonable(value)
        return out


# -- reading values ------------------------------------------------------------------


@dataclass(frozen=True)
class _Given:
    raw: Any
    source: str
    textual: bool  # a string from env or a flag, to be parsed per kind

    def show(self) -> str:
        return _show(self.raw)


def _show(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return json.dumps(raw, ensure_ascii=False)
    if isinstance(raw, list | tuple):
        return "[" + ", ".join(_show(v) for v in raw) + "]"
    if isinstance(raw, dict):
        return "{...}"
    return str(raw)


_TYPE_WORDS: dict[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "list": "a list of strings",
    "size": "a byte count or a size like 16MB",
}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def _got(raw: Any) -> str:
    return repr(raw) if isinstance(raw, str) else _show(raw)


def _wrong_type(kind: Kind, raw: Any) -> _Invalid:
    return _Invalid(f"expected {_TYPE_WORDS[kind]}, got {_got(raw)}")


def _parse_text(kind: Kind, text: str) -> Any:
    if kind == "string":
        return text
    if kind == "integer":
        if not _INT_TEXT.match(text):
            raise _Invalid(f"expected an integer, got {text!r}")
        return int(text)
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise _Invalid(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise _Invalid(f"expected a finite number, got {text!r}")
        return value
    if kind == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _Invalid(f"expected true/false, 1/0 or yes/no, got {text!r}")
    if kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    # size: digits are bytes, anything else goes to the unit parser
    return int(text) if _INT_TEXT.match(text) else text


def _parse_typed(kind: Kind, raw: Any) -> Any:
    if kind == "string":
        if not isinstance(raw, str):
            raise _wrong_type(kind, raw)
        return raw
    if kind == "integer":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _wrong_type(kind, raw)
        return raw
    if kind == "number":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _wrong_type(kind, raw)
        if not math.isfinite(raw):
            raise _Invalid(f"expected a finite number, got {_got(raw)}")
        return raw
    if kind == "boolean":
        if not isinstance(raw, bool):
            raise _wrong_type(kind, raw)
        return raw
    if kind == "list":
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
            raise _wrong_type(kind, raw)
        return list(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise _wrong_type(kind, raw)
    return raw


def _convert(setting: Setting, given: _Given) -> Any:
    if given.textual and given.raw == "" and (setting.default is None or setting.kind == "list"):
        return None if setting.default is None else ()
    raw = (
        _parse_text(setting.kind, given.raw)
        if given.textual
        else _parse_typed(setting.kind, given.raw)
    )
    return setting.check(raw) if setting.check else (tuple(raw) if isinstance(raw, list) else raw)


def _suggest_key(section: str, key: str) -> str | None:
    own = [s.key for s in SCHEMA if s.section == section]
    close = difflib.get_close_matches(key, own, n=1, cutoff=0.6)
    if close:
        return f"{section}.{close[0]}"
    elsewhere = [s.name for s in SCHEMA if s.key == key]
    if elsewhere:
        return elsewhere[0]
    close = difflib.get_close_matches(f"{section}.{key}", list(SETTINGS), n=1, cutoff=0.75)
    return close[0] if close else None


def _file_values(
    data: Mapping[str, Any], source: str, problems: list[ConfigProblem]
) -> dict[str, _Given]:
    given: dict[str, _Given] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            if isinstance(table, dict):
                close = difflib.get_close_matches(section, SECTIONS, n=1, cutoff=0.6)
                hint = f"[{close[0]}]" if close else None
                problems.append(
                    ConfigProblem(section, source, None, f"unknown section [{section}]", hint)
                )
            else:
                # A key outside any section: "url = ..." above the first [table].
                elsewhere = [s.name for s in SCHEMA if s.key == section]
                msg = f"unknown key {section} (every key belongs in a [section])"
                hint = elsewhere[0] if elsewhere else None
                problems.append(ConfigProblem(section, source, None, msg, hint))
            continue
        if not isinstance(table, dict):
            msg = f"[{section}] must be a table, got {_show(table)}"
            problems.append(ConfigProblem(section, source, None, msg))
            continue
        for key, raw in table.items():
            name = f"{section}.{key}"
            if name in SETTINGS:
                given[name] = _Given(raw, source, textual=False)
            else:
                hint = _suggest_key(section, key)
                problems.append(ConfigProblem(name, source, None, f"unknown key {name}", hint))
    return given


def _env_values(env: Mapping[str, str], problems: list[ConfigProblem]) -> dict[str, _Given]:
    given: dict[str, _Given] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        setting = ENV_NAMES.get(name)
        if setting is None:
            close = difflib.get_close_matches(name, list(ENV_NAMES), n=1, cutoff=0.75)
            msg = f"unknown environment variable {name}, ignored"
            hint = close[0] if close else None
            problems.append(ConfigProblem("", f"env {name}", None, msg, hint, "warning"))
            continue
        given[setting.name] = _Given(raw, f"env {name}", textual=True)
    return given


def _flag_values(flags: Mapping[str, object], problems: list[ConfigProblem]) -> dict[str, _Given]:
    given: dict[str, _Given] = {}
    for flag, raw in flags.items():
        if raw is None:  # click passes None for an option that was not given
            continue
        name = FLAG_KEYS.get(flag)
        if name is None:
            close = difflib.get_close_matches(flag, list(FLAG_KEYS), n=1, cutoff=0.6)
            msg = f"unknown flag {flag!r} (known: {', '.join(FLAG_KEYS)})"
            hint = close[0] if close else None
            problems.append(ConfigProblem("", f"--{flag.replace('_', '-')}", None, msg, hint))
            continue
        option = SETTINGS[name].option or flag
        given[name] = _Given(raw, option, textual=isinstance(raw, str))
    return given


# -- cross-key checks --------------------------------------------------------------


class _Checker:
    def __init__(self, values: dict[str, Any], effective: dict[str, _Given]) -> None:
        self.v = values
        self.effective = effective
        self.problems: list[ConfigProblem] = []

    def add(self, key: str, message: str, severity: Severity = "error") -> None:
        given = self.effective.get(key)
        if given is None:
            shown = _show(SETTINGS[key].default)
            self.problems.append(ConfigProblem(key, "default", shown, message, severity=severity))
        else:
            self.problems.append(
                ConfigProblem(key, given.source, given.show(), message, severity=severity)
            )

    def run(self) -> list[ConfigProblem]:
        self._vips()
        self._unicast()
        self._auth_and_tls()
        self._ro()
        interval = self.v.get("announce.garp_interval")
        if interval is not None and interval < 1.0:
            self.add(
                "announce.garp_interval",
                "below 1.0 s: neighbours ignore a GARP within locktime (1 s) of the last one",
                "warning",
            )
        return self.problems

    def _vips(self) -> None:
        rw, ro = self.v.get("rw.vip"), self.v.get("ro.vip")
        if rw is not None and ro is not None and rw.ip == ro.ip:
            self.add("ro.vip", "same address as rw.vip: the RO VIP needs an address of its own")
        rw_vrid, ro_vrid = self.v.get("rw.vrid"), self.v.get("ro.vrid")
        if ro is not None and rw_vrid is not None and rw_vrid == ro_vrid:
            self.add("ro.vrid", "same as rw.vrid: each VIP needs its own VRRP router id")

    def _unicast(self) -> None:
        src = self.v.get("vrrp.unicast_src")
        peers = self.v.get("vrrp.unicast_peers") or ()
        if "vrrp.unicast_peers" not in self.v:
            return  # invalid, already reported
        if peers and "vrrp.unicast_src" in self.v and src is None:
            source = self.effective["vrrp.unicast_peers"].source
            msg = "vrrp.unicast_src is required when vrrp.unicast_peers is set"
            self.problems.append(ConfigProblem("vrrp.unicast_src", source, None, msg))
        if src is not None and src in peers:
            self.add("vrrp.unicast_peers", f"contains vrrp.unicast_src {src} (ourselves)")
        dupes = sorted({str(p) for p in peers if peers.count(p) > 1})
        if dupes:
            self.add("vrrp.unicast_peers", f"lists {', '.join(dupes)} more than once")
        if not peers:
            return
        for vip_key in ("rw.vip", "ro.vip"):
            vip = self.v.get(vip_key)
            if vip is None:
                continue
            for key, addrs in (("vrrp.unicast_src", (src,)), ("vrrp.unicast_peers", peers)):
                wrong = [a for a in addrs if a is not None and a.version != vip.version]
                if wrong:
                    self.add(
                        key,
                        f"{wrong[0]} is IPv{wrong[0].version} but {vip_key} is "
                        f"IPv{vip.version}: unicast VRRP peers must be the VIP's family",
                    )

    def _auth_and_tls(self) -> None:
        v = self.v
        if v.get("patroni.key_file") and not v.get("patroni.cert_file"):
            self.add("patroni.key_file", "needs patroni.cert_file (the client certificate)")
        if v.get("patroni.password") is not None and v.get("patroni.password_file"):
            self.add("patroni.password", "set patroni.password or patroni.password_file, not both")
        for key in ("patroni.password", "patroni.password_file"):
            if v.get(key) is not None and not v.get("patroni.username"):
                self.add(key, "needs patroni.username (basic auth sends a user and a password)")
        url = v.get("patroni.url")
        if url is not None and url.lower().startswith("http://"):
            for key in ("patroni.ca_file", "patroni.cert_file"):
                if v.get(key):
                    self.add(key, "ignored: patroni.url is http://, not https://", "warning")
        if bool(v.get("status.cert_file")) != bool(v.get("status.key_file")):
            missing = "status.key_file" if v.get("status.cert_file") else "status.cert_file"
            present = "status.cert_file" if missing == "status.key_file" else "status.key_file"
            self.add(present, f"needs {missing} as well (TLS needs both)")
        if bool(v.get("status.username")) != bool(v.get("status.password_file")):
            present = "status.username" if v.get("status.username") else "status.password_file"
            other = "status.password_file" if present == "status.username" else "status.username"
            self.add(present, f"needs {other} as well (basic auth needs both)")

    def _ro(self) -> None:
        forwarding = self.v.get("ro.forwarding")
        if self.v.get("ro.dataplane") == "nftables" and forwarding not in (None, "nat"):
            self.add("ro.forwarding", 'nftables supports only "nat" (dr and tun need IPVS)')


# -- loading -----------------------------------------------------------------------


def _build(
    layers: list[dict[str, _Given]],
    problems: list[ConfigProblem],
    path: Path | None,
    *,
    file_failed: bool = False,
) -> Config:
    values: dict[str, Any] = {}
    effective: dict[str, _Given] = {}
    for setting in SCHEMA:
        # Every layer's value is checked, so a bad file value is reported even when a flag
        # overrides it today: it would bite as soon as the flag goes away.
        for layer in layers:
            given = layer.get(setting.name)
            if given is None:
                continue
            try:
                value = _convert(setting, given)
            except _Invalid as exc:
                shown = given.show()
                problems.append(
                    ConfigProblem(setting.name, given.source, shown, exc.message, exc.suggestion)
                )
                values.pop(setting.name, None)
                effective[setting.name] = given
                continue
            values[setting.name] = value
            effective[setting.name] = given
        if setting.name in effective:
            continue
        if setting.required:
            if file_failed:
                continue  # "required" would only repeat that the file is unusable
            how = f"[{setting.section}] {setting.key} = ... in the config file, {setting.env}"
            how += f" or {setting.option}" if setting.option else ""
            msg = f"{setting.name} is required: set {how}"
            problems.append(ConfigProblem(setting.name, "", None, msg))
            continue
        if setting.default is None:
            values[setting.name] = None
        else:
            default = _parse_typed(setting.kind, setting.default)
            values[setting.name] = setting.check(default) if setting.check else default

    problems.extend(_Checker(values, effective).run())
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(problems)

    sections = {}
    for section, cls in SECTION_TYPES.items():
        kwargs = {s.key: values[s.name] for s in SCHEMA if s.section == section}
        sections[section] = cls(**kwargs)
    return Config(**sections, path=path, warnings=tuple(problems))


def _read_toml(path: Path, problems: list[ConfigProblem]) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem("", source, None, f"not UTF-8 text ({exc.reason})"))
        return {}
    except OSError as exc:
        problems.append(
            ConfigProblem("", source, None, f"cannot read config file: {exc.strerror or exc}")
        )
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            source = f"{source}:{m.group(1)}:{m.group(2)}"
            msg = msg[: m.start()]
        elif msg.endswith("(at end of document)"):
            msg = msg[: -len("(at end of document)")].rstrip()
            source = f"{source}: at end of document"
        problems.append(ConfigProblem("", source, None, f"TOML syntax error: {msg}"))
        return {}


def load_config(
    path: str | Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
    *,
    default_path: Path = DEFAULT_CONFIG_PATH,
) -> Config:
    """Read the file (path, else $PGVIP_CONFIG, else default_path), env and flags; validate.

    A missing default file is fine; a missing file named by `path` or PGVIP_CONFIG is an error.
    Raises ConfigError listing every problem; warnings of a usable config are in `.warnings`.
    """
    problems: list[ConfigProblem] = []
    explicit = path if path is not None else (env.get(ENV_CONFIG) or None)
    file_path = Path(explicit) if explicit is not None else default_path
    data: dict[str, Any] = {}
    read: Path | None = None
    if explicit is not None or file_path.exists():
        before = len(problems)
        data = _read_toml(file_path, problems)
        read = file_path
        file_failed = len(problems) > before
    else:
        file_failed = False
    layers = [
        _file_values(data, str(file_path), problems),
        _env_values(env, problems),
        _flag_values(flags, problems),
    ]
    return _build(layers, problems, read, file_failed=file_failed)


def config_from_mapping(
    data: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    *,
    source: str = "<mapping>",
) -> Config:
    """Validate already-parsed TOML data (tests, the lab) exactly like a file's."""
    problems: list[ConfigProblem] = []
    layers = [
        _file_values(data, source, problems),
        _env_values(env or {}, problems),
        _flag_values(flags or {}, problems),
    ]
    return _build(layers, problems, None)


def read_password_file(path: str, key: str = "patroni.password_file") -> str:
    """Read a one-line password file at run time; raises ConfigError naming the key and path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigProblem(key, path, None, f"cannot read {key}: {why}")]) from exc
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError([ConfigProblem(key, path, None, f"{key} is empty")])
    if "\n" in password:
        raise ConfigError([ConfigProblem(key, path, None, f"{key} must hold a single line")])
    return password


# -- documentation ---------------------------------------------------------------------


def _doc_default(setting: Setting) -> str:
    if setting.required:
        return "**required**"
    if setting.default is None:
        return "unset"
    return f"`{_show(setting.default)}`"


def reference_markdown() -> str:
    """The configuration reference, generated from SCHEMA (for docs/config-reference.md)."""
    lines = [
        "# pgvip configuration reference",
        "",
        "Generated from `pgvip.config.SCHEMA`; do not edit by hand.",
        "",
        f"Sources, strongest first: CLI flags, `PGVIP_<SECTION>_<KEY>` environment variables, "
        f"the TOML file (`--config`, `{ENV_CONFIG}`, or `{DEFAULT_CONFIG_PATH}`), defaults.",
        "In the environment, lists are comma-separated, booleans are true/false, 1/0 or yes/no,",
        "and an empty value unsets an optional key.",
    ]
    for section in SECTIONS:
        lines += [
            "",
            f"## [{section}]",
            "",
            "| key | type | default | env | flag | meaning |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for s in (s for s in SCHEMA if s.section == section):
            kind = s.kind + (f" ({s.unit})" if s.unit else "")
            flag = f"`{s.option}`" if s.option else ""
            text = s.help.replace("|", "\\|") + (" Secret: redacted in status." if s.secret else "")
            lines.append(
                f"| `{s.key}` | {kind} | {_doc_default(s)} | `{s.env}` | {flag} | {text} |"
            )
    return "\n".join(lines) + "\n"
