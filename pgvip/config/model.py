"""The typed result of loading a configuration, one frozen dataclass per section, and
which of its values a reload may change without a re-election (from the schema)."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgvip.config.checks import IPAddress, IPInterface
from pgvip.config.problems import ConfigProblem
from pgvip.config.schema import SCHEMA, SECTIONS

# -- the typed result ------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceSection:
    name: str | None


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
    announce: str = "vrrp"


@dataclass(frozen=True)
class BgpConfig:
    speaker: str = "bird"
    binary: str = "/usr/sbin/bird"
    interface: str = "lo"
    local_as: int | None = None
    peer_as: int | None = None
    peers: tuple[IPAddress, ...] = ()
    source: IPAddress | None = None
    backstop: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    hold_time: int = 3
    bfd: bool = False
    bfd_interval: float = 0.1
    runtime_dir: str = "/run/pgvip"


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
    port_check_interval: float
    announce: str = "vrrp"


@dataclass(frozen=True)
class AnnounceConfig:
    garp_count: int
    garp_interval: float
    garp_refresh: float
    reset_stale: bool


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
    "instance": InstanceSection,
    "patroni": PatroniConfig,
    "vrrp": VrrpConfig,
    "rw": RwConfig,
    "ro": RoConfig,
    "announce": AnnounceConfig,
    "notify": NotifyConfig,
    "log": LogConfig,
    "status": StatusConfig,
    "bgp": BgpConfig,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(frozen=True)
class Config:
    instance: InstanceSection
    patroni: PatroniConfig
    vrrp: VrrpConfig
    rw: RwConfig
    ro: RoConfig
    announce: AnnounceConfig
    notify: NotifyConfig
    log: LogConfig
    status: StatusConfig
    bgp: BgpConfig = BgpConfig()
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


def without_hot_keys(config: Config, base: Config) -> Config:
    """`config` with every hot setting (schema rows marked `hot`) taken from `base`, and
    the file path and warnings too: two configs that are equal after this differ only in
    what a running engine can take on a reload."""
    sections: dict[str, Any] = {}
    for section in SECTIONS:
        hot = {
            s.key: getattr(getattr(base, section), s.key)
            for s in SCHEMA
            if s.section == section and s.hot
        }
        if hot:
            sections[section] = dataclasses.replace(getattr(config, section), **hot)
    return dataclasses.replace(config, **sections, path=base.path, warnings=base.warnings)
