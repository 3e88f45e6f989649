"""Render the lab's configuration files: Patroni YAML, pgvip TOML and etcd flags, per node.

The netns lab and the Vagrant VMs use this one generator, so the two never drift apart;
`python -m pgvip.lab.render --vagrant OUTDIR` writes the VM variant (stdlib + PyYAML only).
etcd's settings are in pgvip.lab.etcd_config, the TOML writer in pgvip.lab.toml_text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pgvip.lab.etcd_config import etcd_env
from pgvip.lab.layout import (
    ETCD_CLIENT_PORT,
    PATRONI_PORT,
    PG_PORT,
    REPLICATION_PASSWORD,
    REPLICATION_USER,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    LabLayout,
)
from pgvip.lab.toml_text import TomlValueError, toml_text

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"

# Patroni 4 raises a ttl below 20 to 20 anyway; retry_timeout must satisfy
# loop_wait + 2 * retry_timeout <= ttl or Patroni demotes a healthy leader on a DCS hiccup.
TTL = 20
LOOP_WAIT = 1
RETRY_TIMEOUT = 9
MAXIMUM_LAG_ON_FAILOVER = 1048576

# A custom (dotted) PostgreSQL setting naming the node; Patroni passes such settings through.
NODE_SETTING = "pgvip.node"

RW_VRID = 50
RO_VRID = 49
RW_PRIORITY = 200
# Lab default: 200 ms adverts make a VRRP takeover visible within the demo's 100 ms timeline
# without flooding two cores with multicast.
LAB_ADVERT_INT = 20
LAB_POLL_INTERVAL = 0.1

# The Vagrant VMs: eth0 is Vagrant's NAT network, eth1 the private 10.20.30.0/24 (as in the seed).
VAGRANT_INTERFACE = "eth1"
VAGRANT_DATA_DIR = "/var/lib/postgresql/15/main"
VAGRANT_SOCKET_DIR = "/var/run/postgresql"
VAGRANT_PGPASS = "/var/lib/postgresql/.pgpass_patroni"
VAGRANT_ETCD_DATA_DIR = "/var/lib/etcd/pgvip"


class RenderError(ValueError):
    """A configuration cannot be rendered as asked (unknown node, bad or ambiguous override)."""


# -- Patroni ---------------------------------------------------------------


def pg_hba(layout: LabLayout) -> list[str]:
    """pg_hba lines: trust on the node's own socket, md5 from the lab subnet and from the
    client subnet behind the L3 fabric's router (unused, and unrouted, without one)."""
    subnet = str(layout.subnet)
    return [
        "local all all trust",
        "local replication all trust",
        "host all all 127.0.0.1/32 md5",
        f"host all all {subnet} md5",
        f"host all all {layout.routed_client_subnet} md5",
        f"host replication {REPLICATION_USER} {subnet} md5",
        f"host replication {REPLICATION_USER} 127.0.0.1/32 md5",
    ]


def _check_node(layout: LabLayout, node: str) -> None:
    if node not in layout.node_names():
        raise RenderError(f"unknown node {node!r}: this lab has {', '.join(layout.node_names())}")


def patroni_config(
    layout: LabLayout,
    node: str,
    *,
    pg_bin_dir: str = DEFAULT_PG_BIN,
    data_dir: str | Path | None = None,
    socket_dir: str | Path | None = None,
    pgpass: str | Path | None = None,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The Patroni configuration of one node, as the dict to dump as YAML.

    Directories default to the layout's (``layout.data_dir(node)`` etc.); pgpass defaults to
    ``<node_dir>/pgpass``. With ``log_dir`` PostgreSQL writes ``<node>-postgresql.log`` there
    through its logging collector (the directory must be writable by ``postgres``); without it,
    PostgreSQL logs to its stderr, which is Patroni's stderr.
    """
    _check_node(layout, node)
    ip = layout.node_ip(node)
    data = str(data_dir if data_dir is not None else layout.data_dir(node))
    sock = str(socket_dir if socket_dir is not None else layout.socket_dir(node))
    passfile = str(pgpass if pgpass is not None else layout.node_dir(node) / "pgpass")

    # Cluster-wide parameters live in the DCS (bootstrap.dcs) so every member agrees;
    # only per-host settings (socket dir, logging) stay in the local section.
    local_parameters: dict[str, Any] = {
        # Filesystem sockets are not per-namespace: each node needs its own directory.
        "unix_socket_directories": sock,
        # Through a VIP inet_server_addr() is the VIP itself; this custom setting tells a
        # client which node answered (current_setting('pgvip.node', true)).
        NODE_SETTING: node,
    }
    if log_dir is not None:
        local_parameters.update(
            {
                "logging_collector": "on",
                "log_directory": str(log_dir),
                "log_filename": f"{node}-postgresql.log",
                "log_file_mode": "0644",
                "log_rotation_age": "0",
                "log_rotation_size": "0",
                "log_line_prefix": "%m [%p] %q%u@%d ",
            }
        )

    return {
        "scope": layout.prefix,
        "namespace": "/service/",
        "name": node,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": f"0.0.0.0:{PATRONI_PORT}",
            "connect_address": f"{ip}:{PATRONI_PORT}",
        },
        "etcd3": {"hosts": [f"{layout.etcd_ip}:{ETCD_CLIENT_PORT}"]},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
                # pgvip's policy reads failsafe_mode_is_active from /patroni.
                "failsafe_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_log_hints": "on",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"*:{PG_PORT}",
            "connect_address": f"{ip}:{PG_PORT}",
            "data_dir": data,
            "bin_dir": pg_bin_dir,
            "pgpass": passfile,
            "use_pg_rewind": True,
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": SUPERUSER_PASSWORD},
                "replication": {"username": REPLICATION_USER, "password": REPLICATION_PASSWORD},
            },
            "parameters": local_parameters,
            "pg_hba": pg_hba(layout),
        },
        # No hardware watchdog in a namespace or a small VM; "automatic" would only warn.
        "watchdog": {"mode": "off"},
        "tags": {
            "nofailover": False,
            "noloadbalance": False,
            "clonefrom": False,
            "nosync": False,
        },
    }


def patroni_yaml(layout: LabLayout, node: str, **kw: Any) -> str:
    """`patroni_config` as YAML text (keys in the order written, a header naming the source)."""
    import yaml  # PyYAML ships with Patroni; imported here to keep `import render` stdlib-only.

    body = yaml.safe_dump(patroni_config(layout, node, **kw), sort_keys=False, width=100)
    return f"# Patroni configuration of {node}, rendered by pgvip.lab.render.\n{body}"


# -- pgvip -----------------------------------------------------------------


def pgvip_document(
    layout: LabLayout, node: str, *, interface: str = "eth0", **overrides: Any
) -> dict[str, dict[str, Any]]:
    """The pgvip configuration of one node as nested dicts (section -> key -> value).

    Overrides, in any mix:
      * ``ro=True`` (the default) adds the ``[ro]`` section (RO VIP, vrid 49);
        ``ro=False`` leaves it out;
      * ``section={...}`` merges keys into a section (new keys and new sections allowed);
      * ``key=value`` sets a key that exists in exactly one rendered section
        (``advert_int=100``, ``poll_interval=0.25``, ``priority=150``);
      * a value of ``None`` deletes that key (or section).
    """
    _check_node(layout, node)
    overrides = dict(overrides)
    want_ro = overrides.pop("ro", True)
    if isinstance(want_ro, Mapping):
        ro_extra: Mapping[str, Any] = want_ro
        want_ro = True
    else:
        ro_extra = {}
    if not isinstance(want_ro, bool):
        raise RenderError(f"pgvip override ro must be True, False or a dict, got {want_ro!r}")

    prefixlen = layout.subnet.prefixlen
    doc: dict[str, dict[str, Any]] = {
        "patroni": {
            "url": f"http://127.0.0.1:{PATRONI_PORT}",
            "timeout": 1.0,
            "poll_interval": LAB_POLL_INTERVAL,
            "rise": 1,
            "fall": 3,
        },
        "vrrp": {
            "interface": interface,
            "advert_int": LAB_ADVERT_INT,
            "preempt": True,
            "preempt_delay": 0.0,
        },
        "rw": {
            "vip": f"{layout.rw_vip}/{prefixlen}",
            "vrid": RW_VRID,
            "priority": RW_PRIORITY,
        },
        "log": {"format": "json", "level": "info"},
    }
    if want_ro:
        doc["ro"] = {"vip": f"{layout.ro_vip}/{prefixlen}", "vrid": RO_VRID, **ro_extra}

    for key, value in overrides.items():
        if key in doc or isinstance(value, Mapping):
            if value is None:
                doc.pop(key, None)
                continue
            if not isinstance(value, Mapping):
                raise RenderError(
                    f"pgvip override {key}= names a section and needs a dict, got {value!r}"
                )
            section = doc.setdefault(key, {})
            for sub, subvalue in value.items():
                if subvalue is None:
                    section.pop(sub, None)
                else:
                    section[sub] = subvalue
            continue
        owners = [name for name, section in doc.items() if key in section]
        if not owners:
            raise RenderError(
                f"unknown pgvip override {key!r}: not a key of any rendered section "
                f"({', '.join(doc)}); pass it as section={{'{key}': ...}} to add it"
            )
        if len(owners) > 1:
            raise RenderError(
                f"ambiguous pgvip override {key!r}: it is a key of sections "
                f"{', '.join(owners)}; pass it as e.g. {owners[0]}={{'{key}': ...}}"
            )
        if value is None:
            del doc[owners[0]][key]
        else:
            doc[owners[0]][key] = value
    return doc


def pgvip_config(layout: LabLayout, node: str, *, interface: str = "eth0", **overrides: Any) -> str:
    """The pgvip TOML of one node, in the format of deploy/pgvip.toml (see `pgvip_document`)."""
    doc = pgvip_document(layout, node, interface=interface, **overrides)
    try:
        header = f"# pgvip configuration of {node}, rendered by pgvip.lab.render."
        return toml_text(doc, header=header)
    except TomlValueError as exc:
        raise RenderError(f"pgvip setting {exc}") from exc


# -- Vagrant ---------------------------------------------------------------


def vagrant_layout() -> LabLayout:
    """The VMs' layout: the lab's defaults (10.20.30.0/24, p1..p3, scope 'pgvip')."""
    return LabLayout.create()


def render_vagrant(
    outdir: str | Path, *, ro: bool = False, interface: str = VAGRANT_INTERFACE
) -> list[Path]:
    """Write ``<outdir>/<node>/{patroni.yml,pgvip.toml}`` for p1..p3 and ``<outdir>/etcd.env``."""
    layout = vagrant_layout()
    out = Path(outdir)
    written: list[Path] = []
    for node in layout.node_names():
        node_dir = out / node
        node_dir.mkdir(parents=True, exist_ok=True)
        patroni_file = node_dir / "patroni.yml"
        patroni_file.write_text(
            patroni_yaml(
                layout,
                node,
                data_dir=VAGRANT_DATA_DIR,
                socket_dir=VAGRANT_SOCKET_DIR,
                pgpass=VAGRANT_PGPASS,
            )
        )
        pgvip_file = node_dir / "pgvip.toml"
        pgvip_file.write_text(
            pgvip_config(
                layout,
                node,
                interface=interface,
                ro=ro,
                # VMs on a virtual network: the deploy example's 1 s adverts, 0.25 s polls.
                advert_int=100,
                poll_interval=0.25,
            )
        )
        written += [patroni_file, pgvip_file]
    out.mkdir(parents=True, exist_ok=True)
    etcd_file = out / "etcd.env"
    etcd_file.write_text(etcd_env(layout, data_dir=VAGRANT_ETCD_DATA_DIR))
    written.append(etcd_file)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    # argparse, not click as in the rest of the CLI: the Vagrant VMs run this with the
    # system python3 and PyYAML only, before pgvip's venv (and click) exists.
    parser = argparse.ArgumentParser(
        prog="python -m pgvip.lab.render",
        description="Render the Vagrant VMs' Patroni, pgvip and etcd configuration.",
    )
    parser.add_argument(
        "--vagrant",
        metavar="OUTDIR",
        required=True,
        help="write OUTDIR/p1..p3/{patroni.yml,pgvip.toml} and OUTDIR/etcd.env",
    )
    parser.add_argument("--ro", action="store_true", help="also configure the RO VIP (vrid 49)")
    parser.add_argument(
        "--interface",
        default=VAGRANT_INTERFACE,
        help="interface on 10.20.30.0/24 that carries VRRP and the VIPs (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.interface or "/" in args.interface or len(args.interface) > 15:
        print(
            f"render: --interface must be an interface name, got {args.interface!r}",
            file=sys.stderr,
        )
        return 2
    try:
        written = render_vagrant(args.vagrant, ro=args.ro, interface=args.interface)
    except (OSError, RenderError) as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
