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

Layout: `schema` (one row per key), `checks` (value checks), `values` (reading file, env and
flags), `load` (merging, cross-key checks, building), `model` (the typed result and the
hot-reload rule), `problems`, `reference` (the generated docs).
"""

from __future__ import annotations

from pgvip.config.load import config_from_mapping, load_config, read_password_file
from pgvip.config.model import (
    SECTION_TYPES,
    AnnounceConfig,
    BgpConfig,
    Config,
    LogConfig,
    NotifyConfig,
    PatroniConfig,
    RoConfig,
    RwConfig,
    StatusConfig,
    VrrpConfig,
    without_hot_keys,
)
from pgvip.config.problems import ConfigError, ConfigProblem
from pgvip.config.reference import reference_markdown
from pgvip.config.schema import (
    DEFAULT_CONFIG_PATH,
    ENV_CONFIG,
    ENV_NAMES,
    ENV_NOT_SETTINGS,
    ENV_PREFIX,
    FLAG_KEYS,
    HOT_KEYS,
    REQUIRED,
    SCHEMA,
    SECTIONS,
    SETTINGS,
    Setting,
)

__all__ = [
    "BgpConfig",
    "DEFAULT_CONFIG_PATH",
    "ENV_CONFIG",
    "ENV_NAMES",
    "ENV_NOT_SETTINGS",
    "ENV_PREFIX",
    "FLAG_KEYS",
    "HOT_KEYS",
    "REQUIRED",
    "SCHEMA",
    "SECTIONS",
    "SECTION_TYPES",
    "SETTINGS",
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
    "without_hot_keys",
]
