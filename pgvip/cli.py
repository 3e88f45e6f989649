"""The `pgvip` command line: run, check-config, release, and the lab."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from pgvip import __version__
from pgvip.lazy_group import LazyGroup

DEFAULT_CONFIG = "/etc/pgvip/pgvip.toml"

# Exit codes: 2 means "fix your configuration or environment"; systemd's
# RestartPreventExitStatus=2 keeps such a failure from becoming a restart loop.
EXIT_USAGE = 2


def _fail(message: str) -> None:
    click.echo(f"pgvip: {message}", err=True)
    sys.exit(EXIT_USAGE)


def config_options(func: Any) -> Any:
    """`--config` plus one flag per schema row that has one (pgvip.config.schema); each
    beats PGVIP_* env, which beats the file."""
    from pgvip.config.schema import SCHEMA

    options = [
        click.option(
            "--config",
            "config_path",
            metavar="FILE",
            default=None,
            help=f"TOML config file (default {DEFAULT_CONFIG}; env PGVIP_CONFIG)",
        )
    ]
    for setting in SCHEMA:
        if setting.option is None or setting.flag is None:
            continue
        kind = int if setting.kind == "integer" else None
        options.append(
            click.option(
                setting.option, setting.flag, type=kind, help=f"{setting.name}: {setting.help}"
            )
        )
    for option in reversed(options):
        func = option(func)
    return func


def _load(config_path: str | None, flags: dict[str, Any]) -> Any:
    from pgvip.config import ConfigError, load_config

    path: str | None = config_path or os.environ.get("PGVIP_CONFIG")
    explicit = path is not None
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return load_config(path, os.environ, given)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    except FileNotFoundError:
        if explicit:
            _fail(f"config file {path} does not exist")
        raise


@click.group(
    cls=LazyGroup,
    # The lab is for demos and tests; `pgvip run` must not import a line of it.
    lazy={"lab": ("pgvip.lab.cli:lab", "The netns lab: a real Patroni cluster in namespaces.")},
)
@click.version_option(__version__, prog_name="pgvip")
def main() -> None:
    """pgvip: an RW VIP on the Patroni leader and an RO VIP over the replicas."""


@main.command("check-config")
@config_options
def check_config(config_path: str | None, **flags: Any) -> None:
    """Validate the configuration without touching the network (exit 2 if invalid).

    Also refuses what another pgvip instance running on this host already holds (its VRID,
    VIP or status port), as `run` would; not checked while this instance itself runs.
    """
    from pgvip.daemon.host_state import conflicts

    config = _load_buildable(config_path, flags)
    clashes = conflicts(config)
    for clash in clashes:
        click.echo(f"pgvip: {clash}", err=True)
    if clashes:
        sys.exit(EXIT_USAGE)
    if config.rw.announce == "bgp":
        bgp = config.bgp
        ro = f", ro {config.ro.vip}" if config.ro.vip is not None else ""
        peers = ", ".join(str(p) for p in bgp.peers)
        click.echo(
            f"pgvip: configuration OK (bgp: rw {config.rw.vip}{ro} on {bgp.interface}, "
            f"AS {bgp.local_as} to AS {bgp.peer_as} at {peers})"
        )
        return
    ro = f", ro {config.ro.vip} vrid {config.ro.vrid}" if config.ro.vip is not None else ""
    click.echo(
        f"pgvip: configuration OK (rw {config.rw.vip} vrid {config.rw.vrid}{ro} "
        f"on {config.vrrp.interface})"
    )


def _load_buildable(config_path: str | None, flags: dict[str, Any]) -> Any:
    """`_load`, then what `run` builds from the config alone (pgvip.daemon.blueprint): both
    check-config and run stop here, with the same message and exit status."""
    from pgvip.config import ConfigError
    from pgvip.daemon.blueprint import check_buildable

    config = _load(config_path, flags)
    try:
        check_buildable(config)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    return config


@main.command()
@config_options
def run(config_path: str | None, **flags: Any) -> None:
    """Run the daemon in the foreground (as a systemd service)."""
    # Optional imports that libraries take when installed but the daemon never uses:
    # structlog's rich tracebacks (rich + pygments) and pyroute2's ss2 process names
    # (psutil). Blocking them keeps ~5 MiB off a process that runs for months.
    for optional in ("rich", "psutil"):
        sys.modules.setdefault(optional, None)  # type: ignore[arg-type]
    import asyncio

    from pgvip import log as pgvip_log
    from pgvip.dataplane.privileges import check_capabilities, interface_exists

    config = _load_buildable(config_path, flags)
    pgvip_log.configure(config.log.format, config.log.level)
    if not interface_exists(config.vrrp.interface):
        import socket

        names = ", ".join(name for _, name in socket.if_nameindex())
        _fail(f"interface {config.vrrp.interface} does not exist (available: {names})")
    missing = check_capabilities()
    if missing:
        _fail(
            f"missing privilege {', '.join(missing)}: run as root or grant "
            "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW (see deploy/pgvip.service)"
        )
    if config.patroni.password_file and not os.access(config.patroni.password_file, os.R_OK):
        _fail(f"patroni.password_file {config.patroni.password_file} is not readable")

    from pgvip.daemon.service import Daemon

    def reload() -> Any:
        from pgvip.config import load_config

        path = config_path or os.environ.get("PGVIP_CONFIG")
        if path is None and Path(DEFAULT_CONFIG).exists():
            path = DEFAULT_CONFIG
        return load_config(path, os.environ, {k: v for k, v in flags.items() if v is not None})

    from pgvip.daemon.service import STARTUP_ERRORS

    try:
        code = asyncio.run(Daemon(config, reload).run())
    except STARTUP_ERRORS as exc:
        # What the environment refused at start-up (a port in use, a balancer the kernel
        # lacks, an interface without an address): restarting will not help, say why.
        _fail(str(exc))
    sys.exit(code)


@main.command()
@click.option(
    "--interface",
    "interfaces",
    multiple=True,
    help="interface to clean (repeatable); lo is always cleaned too",
)
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    default=None,
    help="take the interface (and the RO VIP's IPVS service) from this config file",
)
def release(interfaces: tuple[str, ...], config_path: str | None) -> None:
    """Remove the addresses (and balancer state) pgvip created; for ExecStopPost.

    With --config, only that config's instance (two clusters on one host each keep theirs):
    its VIPs on its interface, lo and any --interface, its nftables tables (named after
    instance.name) and the IPVS service of its RO VIP (a crashed daemon cannot say which
    service was its own). With --interface alone, a host-wide clean-up: every pgvip address on
    those interfaces and lo, and the nftables tables of every pgvip instance.
    """
    import asyncio

    from pgvip.dataplane.addresses import AddressError, release_all
    from pgvip.naming import StateNames

    ipvs_service: tuple[Any, int] | None = None
    names: StateNames | None = None
    only: set[Any] | None = None
    if config_path is not None:
        config = _load(config_path, {})
        # bgp mode keeps the VIPs on bgp.interface (lo by default, which is cleaned anyway).
        extra = (config.bgp.interface,) if config.rw.announce == "bgp" else ()
        interfaces = tuple(dict.fromkeys((*interfaces, config.vrrp.interface, *extra)))
        names = StateNames(config.instance.name)
        only = {config.rw.vip.ip}
        if config.ro.vip is not None:
            ipvs_service = (config.ro.vip.ip, config.ro.port)
            only.add(config.ro.vip.ip)
    if not interfaces:
        _fail("give --interface IFNAME or --config FILE: which interface to clean")
    removed: list[Any] = []
    for ifname in interfaces:
        try:
            removed += asyncio.run(release_all(ifname, extra_ifnames=("lo",), only=only))
        except AddressError as exc:
            _fail(str(exc))
    for addr in removed:
        click.echo(f"pgvip: released {addr}")
    from pgvip.dataplane.balancer import LoadBalancerError
    from pgvip.dataplane.balancer.choice import ipvs_available
    from pgvip.dataplane.balancer.nftables import find_nft

    nft = find_nft()
    tables: list[tuple[str, str]] = []
    if nft is not None:
        # The RO director's table, the IPVS masquerade and the stale-ARP guard: a crashed
        # daemon cannot remove them.
        from pgvip.dataplane.cleanup import delete_tables, instance_tables, pgvip_tables

        try:
            tables = asyncio.run(pgvip_tables(nft))
            if names is not None:
                tables = instance_tables(tables, names)
            asyncio.run(delete_tables(nft, tables))
        except LoadBalancerError as exc:
            _fail(f"removing pgvip's nftables tables failed: {exc}")
        for family, table in tables:
            click.echo(f"pgvip: nftables table {family} {table} removed")
    if not removed and not tables:
        click.echo("pgvip: nothing to release")
    if ipvs_service is not None and ipvs_available()[0]:
        from pgvip.dataplane.balancer.ipvs import IpvsLoadBalancer

        vip, port = ipvs_service
        try:
            assert names is not None
            ipvs = IpvsLoadBalancer(
                service=ipvs_service, manage_sysctls=False, instance=names.instance
            )
            asyncio.run(ipvs.clear())
        except LoadBalancerError as exc:
            _fail(f"removing the IPVS service {vip}:{port} failed: {exc}")
        click.echo(f"pgvip: IPVS service {vip}:{port} removed (if there was one)")


from pgvip.status.cli import status  # noqa: E402

main.add_command(status)
