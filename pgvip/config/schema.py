"""The schema: one row per configuration key (type, default, check, doc, CLI flag, and
whether a running daemon can take a new value on reload)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pgvip.config.checks import (
    Check,
    choice,
    float_range,
    ifname,
    instance_name,
    int_range,
    listen,
    network,
    nonempty,
    size,
    unicast,
    unicast_list,
    url,
    vip,
)

DEFAULT_CONFIG_PATH = Path("/etc/pgvip/pgvip.toml")
ENV_PREFIX = "PGVIP_"
ENV_CONFIG = "PGVIP_CONFIG"
# PGVIP_* variables that are not settings: the config path, and scripts/setup.sh's knobs.
ENV_NOT_SETTINGS = frozenset({ENV_CONFIG, "PGVIP_VENV", "PGVIP_SKIP_APT"})
Kind = Literal["string", "integer", "number", "boolean", "list", "size"]


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
    # A reload may change it under a running election (else the engine is rebuilt).
    hot: bool = False

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


_SECONDS_30 = float_range(0, 30, lo_open=True)
_SECONDS_60 = float_range(0, 60, lo_open=True)
_SECONDS_HOUR = float_range(0, 3600, lo_open=True)
_COUNT = int_range(1, 100)
_PORT = int_range(1, 65535)

# fmt: off
# One row per key; ruff would explode each row into a dozen lines, which hides the table.
SCHEMA: tuple[Setting, ...] = (
    # [instance]
    _s("instance", "name", "string", None,
       "Name of this pgvip instance, for a host that runs two (two Patroni clusters): its "
       "nftables tables become pgvip-NAME, pgvip_ipvs-NAME and pgvip_guard-NAME, and "
       "`pgvip release --config` removes only its own state. Unset: the tables pgvip, "
       "pgvip_ipvs and pgvip_guard, and only one unnamed instance per host. 1-24 characters: "
       "a-z, 0-9, '_' or '-'.", check=instance_name),
    # [patroni]
    _s("patroni", "url", "string", REQUIRED, "This node's Patroni REST API, http(s)://host:port.",
       check=url, flag="patroni_url", unit="URL"),
    _s("patroni", "ca_file", "string", None, "TLS: verify Patroni's certificate with this CA.",
       unit="path"),
    _s("patroni", "cert_file", "string", None,
       "TLS client certificate (PEM; may also hold the key).", unit="path"),
    _s("patroni", "key_file", "string", None, "TLS client key, if not inside cert_file.",
       unit="path"),
    _s("patroni", "username", "string", None,
       "REST API basic-auth user (Patroni restapi.authentication).", check=nonempty),
    _s("patroni", "password", "string", None,
       "REST API password; prefer password_file, which keeps it out of the config.",
       secret=True),
    _s("patroni", "password_file", "string", None,
       "File holding the REST API password (read when the daemon starts).", unit="path"),
    _s("patroni", "timeout", "number", 1.0, "Seconds per request (> 0, <= 30).",
       check=_SECONDS_30, unit="seconds"),
    _s("patroni", "poll_interval", "number", 0.25, "Seconds between polls of /primary.",
       check=_SECONDS_60, unit="seconds", hot=True),
    _s("patroni", "fast_poll_interval", "number", 0.05,
       "Seconds between polls of /primary while no node holds the RW VIP (its master resigned "
       "or went silent), so the new leader is seen at once. Capped at poll_interval.",
       check=_SECONDS_60, unit="seconds", hot=True),
    _s("patroni", "fast_poll_window", "number", 60.0,
       "Poll fast for at most this many seconds after the RW master went missing, then fall "
       "back to poll_interval (a cluster without a leader for long is not worth 20 polls/s).",
       check=_SECONDS_HOUR, unit="seconds", hot=True),
    _s("patroni", "rise", "integer", 1,
       "Consecutive 'yes' answers before the node may hold the RW VIP.", check=_COUNT, hot=True),
    _s("patroni", "fall", "integer", 3,
       "Consecutive 'cannot ask Patroni' answers before the node must release the RW VIP. "
       "A 'no' (HTTP 503) releases at once.", check=_COUNT, hot=True),
    _s("patroni", "grace", "number", None,
       "Also release after this many seconds without a definite answer, if sooner than fall.",
       check=_SECONDS_HOUR, unit="seconds", hot=True),
    _s("patroni", "failsafe_keep", "boolean", True,
       "Keep the RW VIP while Patroni is unreachable if its last /patroni said failsafe mode "
       "was active (Patroni keeps the primary running through a DCS outage then).", hot=True),
    _s("patroni", "failsafe_max", "number", 30.0,
       "Upper bound, in seconds since the last definite answer, on the failsafe_keep exception.",
       check=_SECONDS_HOUR, unit="seconds", hot=True),
    # [vrrp]
    _s("vrrp", "interface", "string", REQUIRED, "Interface that carries the VIPs and VRRP.",
       check=ifname, flag="interface"),
    _s("vrrp", "advert_int", "integer", 100,
       "VRRP advertisement interval in centiseconds (1-4095), as VRRPv3 carries it.",
       check=int_range(1, 4095), unit="centiseconds"),
    _s("vrrp", "preempt", "boolean", True,
       "A higher-priority eligible node takes the VIP over from a lower one."),
    _s("vrrp", "preempt_delay", "number", 0.0, "Seconds to wait before preempting.",
       check=float_range(0, 1000), unit="seconds"),
    _s("vrrp", "unicast_src", "string", None,
       "Unicast mode: our source address (required with unicast_peers).", check=unicast,
       unit="address"),
    _s("vrrp", "unicast_peers", "list", [],
       "Unicast mode: the peers' addresses (multicast 224.0.0.18 / ff02::12 when empty).",
       check=unicast_list, unit="addresses"),
    # [rw]
    _s("rw", "vip", "string", REQUIRED,
       "The RW VIP, held by the Patroni leader: address[/prefix], IPv4 or IPv6 "
       "(no prefix: /32 or /128).", check=vip, flag="rw_vip", unit="CIDR"),
    _s("rw", "vrid", "integer", 50, "VRRP router id of the RW VIP (1-255), unique on the LAN.",
       check=int_range(1, 255), flag="rw_vrid"),
    _s("rw", "priority", "integer", 254,
       "VRRP priority of this node for the RW VIP (1-254). Only the Patroni leader is eligible, "
       "so all nodes may share one value; a high one keeps Skew_Time (the takeover delay after "
       "a priority-0 advert) short: 0.004 s at 254 with advert_int 100 (0.22 s at 200).",
       check=int_range(1, 254), flag="priority", hot=True),
    _s("rw", "announce", "string", "vrrp",
       "How the RW VIP reaches clients: vrrp (the VIP on vrrp.interface, elected with VRRP, "
       "announced with gratuitous ARP; one L2 segment) or bgp (the VIP on bgp.interface, "
       "announced as a /32 or /128 route through the BGP speaker while this node is the "
       "leader; see [bgp]).", check=choice("vrrp", "bgp")),
    # [ro]
    _s("ro", "vip", "string", None,
       "The RO VIP, load-balanced over the replicas; no RO VIP when unset.", check=vip,
       flag="ro_vip", unit="CIDR"),
    _s("ro", "vrid", "integer", 51, "VRRP router id of the RO VIP (1-255), not rw.vrid.",
       check=int_range(1, 255), flag="ro_vrid"),
    _s("ro", "priority_replica", "integer", 254,
       "VRRP priority for the RO VIP while this node is a replica. High, as rw.priority, so "
       "that a resigning director's successor takes over after a short Skew_Time (0.004 s at "
       "254 with advert_int 100; 0.41 s at 150).", check=int_range(1, 254)),
    _s("ro", "priority_leader", "integer", 200,
       "VRRP priority for the RO VIP while this node is the leader (the director is normally "
       "a replica, so keep it below ro.priority_replica).", check=int_range(1, 254)),
    _s("ro", "port", "integer", 5432, "PostgreSQL port behind the RO VIP.", check=_PORT),
    _s("ro", "max_lag", "size", "16MB",
       "Largest replication lag of a backend, in bytes or Patroni units (1MB, 16MB, ...).",
       check=size, unit="bytes", hot=True),
    _s("ro", "probe_sql", "boolean", False,
       "Also check each backend with a SQL query, not only Patroni's /replica."),
    _s("ro", "probe_timeout", "number", 1.0, "Seconds per backend probe.", check=_SECONDS_30,
       unit="seconds"),
    _s("ro", "rise", "integer", 2, "Consecutive good probes before a backend gets traffic.",
       check=_COUNT, hot=True),
    _s("ro", "fall", "integer", 2, "Consecutive bad probes before a backend is removed.",
       check=_COUNT, hot=True),
    _s("ro", "drain_timeout", "number", 10.0,
       "Seconds a backend that leaves rotation keeps its established connections at weight 0 "
       "(no new ones); then it is removed and what is left of them is ended with a reset, so "
       "clients reconnect at once (IPVS: expire_nodest_conn = 1; nftables: their conntrack "
       "entries are deleted). 0 = removed and ended at once.",
       check=float_range(0, 3600), unit="seconds", hot=True),
    _s("ro", "fallback", "string", "primary",
       "With no healthy replica: send RO traffic to the primary, or none.",
       check=choice("primary", "none"), hot=True),
    _s("ro", "include_primary", "boolean", False,
       "Balance over the primary as well as the replicas.", hot=True),
    _s("ro", "dataplane", "string", "auto",
       "RO load balancer: ipvs, nftables, or auto (IPVS when the kernel has it).",
       check=choice("auto", "ipvs", "nftables")),
    _s("ro", "scheduler", "string", "rr", "Scheduler, in IPVS words: rr, wrr, lc, wlc, sh, mh.",
       check=choice("rr", "wrr", "lc", "wlc", "sh", "mh"), hot=True),
    _s("ro", "forwarding", "string", "nat",
       "Forwarding method: nat, dr (direct routing) or tun; nftables supports only nat.",
       check=choice("dr", "nat", "tun")),
    _s("ro", "persistence_timeout", "integer", 0,
       "Seconds a client sticks to its backend; 0 = off.", check=int_range(0, 86400),
       unit="seconds", hot=True),
    _s("ro", "poll_interval", "number", 0.5,
       "Seconds between backend probes (by the director only); a replica that answers no "
       "(its /replica 503, connection refused) leaves rotation at its first such probe.",
       check=_SECONDS_60, unit="seconds"),
    _s("ro", "port_check_interval", "number", 0.2,
       "Seconds between TCP connects to each backend in rotation (by the director only); the "
       "first refusal takes it out at once, long before Patroni's /replica says so; when it is "
       "the director's own PostgreSQL, the node also resigns the RO VIP. Each connect is "
       "closed without a byte sent, but PostgreSQL forks a backend for it (measured: about 3 ms "
       "of CPU each, 1.5 % of a core per replica at 0.2 s); with log_connections on, each is "
       "one log line. 0 = off (Patroni's /replica and ro.probe_sql only).",
       check=float_range(0, 60), unit="seconds"),
    _s("ro", "announce", "string", "vrrp",
       "How the RO VIP reaches clients: vrrp (one director, elected with VRRP, balances with "
       "IPVS/nftables) or bgp (every healthy replica announces the VIP as a host route and the "
       "router balances with ECMP; the leader only when no replica is healthy). Must equal "
       "rw.announce.", check=choice("vrrp", "bgp")),
    # [announce]
    _s("announce", "garp_count", "integer", 3,
       "Gratuitous ARPs / unsolicited NAs sent on becoming MASTER (1-100); at least one, "
       "or neighbours keep sending to the old holder's MAC until their ARP entry expires.",
       check=int_range(1, 100), hot=True),
    _s("announce", "garp_interval", "number", 1.1,
       "Seconds between them; below 1.0 neighbours may ignore repeats, below 0.1 is an error.",
       check=float_range(0.1, 60), unit="seconds", hot=True),
    _s("announce", "garp_refresh", "number", 0.0,
       "Seconds between re-announcements while MASTER; 0 = off.",
       check=float_range(0, 86400), unit="seconds", hot=True),
    _s("announce", "reset_stale", "boolean", True,
       "Answer TCP sent to a VIP this node does not hold with a reset (nftables table "
       "inet pgvip_guard), so a client whose ARP cache still points here retries at once "
       "instead of waiting out a lost SYN."),
    # [notify]
    _s("notify", "command", "string", None,
       "Run as: command INSTANCE STATE PRIORITY on every transition (keepalived style); "
       "may carry tokens, so it is redacted.", check=nonempty, secret=True, hot=True),
    _s("notify", "timeout", "number", 10.0, "Seconds before the notify command is killed.",
       check=_SECONDS_HOUR, unit="seconds", hot=True),
    # [log]
    _s("log", "format", "string", "auto",
       "auto (journal entries with fields under systemd, else console on a TTY, else "
       "JSON), journal, console or json.",
       check=choice("auto", "journal", "console", "json"), hot=True),
    _s("log", "level", "string", "info", "debug, info, warning, error or critical.",
       check=choice("debug", "info", "warning", "error", "critical"), hot=True),
    # [status]
    _s("status", "listen", "string", "127.0.0.1", "Address of the status/metrics HTTP API.",
       check=listen, unit="address", hot=True),
    _s("status", "port", "integer", 8010,
       "Port of the status/metrics HTTP API (8010: 8008 is Patroni's).", check=_PORT, hot=True),
    _s("status", "username", "string", None, "Basic-auth user for the status API.",
       check=nonempty, hot=True),
    _s("status", "password_file", "string", None,
       "File holding the status API password (with username).", unit="path", hot=True),
    _s("status", "cert_file", "string", None, "Serve the status API over TLS with this cert.",
       unit="path", hot=True),
    _s("status", "key_file", "string", None, "Key of status.cert_file.", unit="path", hot=True),
    # [bgp]
    _s("bgp", "speaker", "string", "bird",
       "The BGP speaker pgvip runs as its own child process (it dies with pgvip, so a crashed "
       "pgvip's routes go with its sessions): bird (BIRD 2, Debian's bird2).",
       check=choice("bird")),
    _s("bgp", "binary", "string", "/usr/sbin/bird", "Path of the speaker's executable.",
       unit="path"),
    _s("bgp", "interface", "string", "lo",
       "Interface the VIPs are put on in bgp mode; the speaker announces exactly the VIPs "
       "found on it.", check=ifname),
    _s("bgp", "local_as", "integer", None, "This node's AS number (required in bgp mode).",
       check=int_range(1, 4294967295)),
    _s("bgp", "peer_as", "integer", None, "The routers' AS number (required in bgp mode).",
       check=int_range(1, 4294967295)),
    _s("bgp", "peers", "list", [],
       "The routers' addresses, one BGP session each (required in bgp mode).",
       check=unicast_list, unit="addresses"),
    _s("bgp", "source", "string", None,
       "Local address of the sessions and the routes' next hop; default: the primary address "
       "of vrrp.interface (the uplink in bgp mode).", check=unicast, unit="address"),
    _s("bgp", "backstop", "string", None,
       "A prefix that covers the VIPs (e.g. 10.22.0.0/24, reserved for them), announced by "
       "every node at all times. Between the old leader's withdraw and the new one's "
       "announcement the router then sends VIP traffic to any node, whose reset guard "
       "(announce.reset_stale) answers TCP with a reset, instead of dropping it: a client's "
       "connect fails at once and retries, rather than losing its SYN (1 s). Unset: off.",
       check=network, unit="CIDR"),
    _s("bgp", "hold_time", "integer", 3,
       "BGP hold time in seconds (3-65535): how long a router keeps this node's routes after "
       "the node goes silent (host down, link cut). A crash of pgvip or the speaker closes the "
       "sessions and withdraws at once; graceful restart is always off, so nothing outlives "
       "them.", check=int_range(3, 65535), unit="seconds"),
    _s("bgp", "bfd", "boolean", False,
       "Also run BFD on the sessions (the routers must run it too): a silent peer is declared "
       "down after bfd_interval x 3 instead of hold_time."),
    _s("bgp", "bfd_interval", "number", 0.1,
       "BFD transmit/receive interval in seconds.", check=float_range(0.01, 10), unit="seconds"),
    _s("bgp", "runtime_dir", "string", "/run/pgvip",
       "Directory for the speaker's config and control socket (systemd RuntimeDirectory).",
       unit="path"),
)
# fmt: on

SETTINGS: dict[str, Setting] = {s.name: s for s in SCHEMA}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SCHEMA))
ENV_NAMES: dict[str, Setting] = {s.env: s for s in SCHEMA}
FLAG_KEYS: dict[str, str] = {s.flag: s.name for s in SCHEMA if s.flag}
HOT_KEYS: frozenset[str] = frozenset(s.name for s in SCHEMA if s.hot)
