"""`pgvip lab ...`: build, inspect, break and remove the netns lab from the command line.

Imported by pgvip.cli at start-up, so everything beyond click is imported inside the commands.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from pgvip.lab.layout import DEFAULT_NODES, DEFAULT_PREFIX, DEFAULT_SUBNET, MAX_NODES, MIN_NODES

if TYPE_CHECKING:
    from pgvip.lab.cluster import Lab

EXIT_USAGE = 2

prefix_option = click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    metavar="NAME",
    help="the lab's name: its namespaces are NAME-sw, NAME-etcd, NAME-client, NAME-p1...",
)


def _fail(message: str) -> NoReturn:
    click.echo(f"pgvip lab: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _require_root() -> None:
    from pgvip.lab.preflight import PreflightError, require_root

    try:
        require_root()
    except PreflightError as exc:
        _fail(str(exc))


def _load(prefix: str) -> Lab:
    from pgvip.lab.cluster import Lab
    from pgvip.lab.errors import LabError

    try:
        return Lab.load(prefix)
    except LabError as exc:
        _fail(str(exc))


def _guard(action: Callable[[], Any]) -> Any:
    """Run a lab operation, turning its LabError into a message and exit status 2."""
    from pgvip.lab.errors import LabError

    try:
        return action()
    except LabError as exc:
        _fail(str(exc))


@click.group()
def lab() -> None:
    """The netns lab: a real Patroni cluster (etcd, PostgreSQL, pgvip) in network namespaces.

    Every command needs root. Start with `pgvip lab up`, then `pgvip lab demo`.
    """


@lab.command()
@click.option(
    "--nodes",
    type=int,
    default=DEFAULT_NODES,
    show_default=True,
    help=f"number of PostgreSQL nodes ({MIN_NODES} to {MAX_NODES})",
)
@prefix_option
@click.option(
    "--subnet",
    default=DEFAULT_SUBNET,
    show_default=True,
    metavar="A.B.C.0/24",
    help="the lab's /24; must not collide with anything in the root namespace",
)
@click.option("--no-pgvip", is_flag=True, help="run Patroni only, without pgvip on the nodes")
@click.option(
    "--pg-bin",
    metavar="DIR",
    default=None,
    help="PostgreSQL binaries (default /usr/lib/postgresql/15/bin)",
)
@click.option(
    "--timeout", type=float, default=90.0, show_default=True, help="seconds to wait for ready"
)
def up(
    nodes: int, prefix: str, subnet: str, no_pgvip: bool, pg_bin: str | None, timeout: float
) -> None:
    """Build a lab and wait until it is ready (leader, streaming replicas, RW VIP)."""
    _require_root()
    from pgvip.lab.cluster import Lab
    from pgvip.lab.layout import LabLayout, LayoutError

    try:
        layout = LabLayout.create(prefix=prefix, subnet=subnet, nodes=nodes)
    except LayoutError as exc:
        _fail(str(exc))
    the_lab = Lab(layout, pgvip=not no_pgvip, pg_bin=pg_bin)
    started = time.monotonic()
    try:
        _guard(lambda: the_lab.up(timeout=timeout, progress=click.echo))
    except KeyboardInterrupt:
        click.echo(
            f"\npgvip lab: interrupted; `pgvip lab down --prefix {prefix}` removes what was built",
            err=True,
        )
        sys.exit(130)
    elapsed = time.monotonic() - started
    leader = the_lab.leader() or "?"
    click.echo(f"lab {prefix} up in {elapsed:.1f} s: leader {leader}, logs in {layout.log_dir}")
    target = layout.rw_vip if not no_pgvip else layout.node_ip(leader if leader != "?" else "p1")
    click.echo(
        f"  connect: ip netns exec {layout.client_ns} env PGPASSWORD=postgres "
        f"psql -h {target} -U postgres"
    )
    click.echo(f"  remove:  pgvip lab down --prefix {prefix}")


@lab.command()
@prefix_option
def down(prefix: str) -> None:
    """Remove a lab: processes, namespaces, mounts, route (logs stay). Safe to repeat."""
    _require_root()
    from pgvip.lab.cluster import Lab
    from pgvip.lab.layout import LabLayout, LayoutError
    from pgvip.lab.preflight import candidate_namespaces

    try:
        layout = LabLayout.create(prefix=prefix)
    except LayoutError as exc:
        _fail(str(exc))
    from pgvip.lab import netns

    if not layout.state_file.exists():
        present = [ns for ns in candidate_namespaces(layout) if netns.exists(ns)]
        if not present:
            click.echo(f"no lab {prefix}: nothing to remove")
            return
        the_lab = Lab(layout)  # no state file: remove the namespaces of this prefix
    else:
        try:
            the_lab = Lab.load(prefix)
        except Exception:  # noqa: BLE001 - a damaged state file must not block removal
            the_lab = Lab(layout)
    started = time.monotonic()
    _guard(the_lab.down)
    click.echo(f"lab {prefix} removed in {time.monotonic() - started:.1f} s")


@lab.command()
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(prefix: str, as_json: bool) -> None:
    """Show a lab's namespaces, processes, Patroni members, VIP holders and log directory."""
    _require_root()
    the_lab = _load(prefix)
    info = _guard(the_lab.status)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(
        f"lab {info['prefix']} ({info['subnet']}, {len(info['nodes'])} nodes, "
        f"pgvip {'on' if info['pgvip'] else 'off'}): {info['phase']}"
    )
    click.echo(f"  logs:  {info['log_dir']}")
    click.echo(f"  state: {info['state_file']}")
    missing = [ns for ns, ok in info["namespaces"].items() if not ok]
    click.echo(
        "  namespaces: "
        + ("all present" if not missing else f"MISSING {', '.join(missing)}")
        + f" ({', '.join(info['namespaces'])})"
    )
    click.echo("  processes:")
    for key, proc in sorted(info["processes"].items()):
        pid = proc["pid"] if proc["pid"] is not None else "-"
        click.echo(
            f"    {key:<14} {'running' if proc['alive'] else 'DOWN':<8} pid {pid:<8} {proc['log']}"
        )
    if info["members_error"]:
        click.echo(f"  members: unknown ({info['members_error']})")
    else:
        click.echo("  members:")
        for m in info["members"]:
            lag = m.get("lag", "")
            lag_text = f" lag {lag}" if lag not in ("", None) else ""
            click.echo(
                f"    {m.get('name', '?'):<4} {m.get('role', '?'):<8} {m.get('state', '?'):<10} "
                f"{m.get('host', '?')} tl {m.get('timeline', '?')}{lag_text}"
            )
    holders = info["vip_holders"]
    click.echo(
        f"  RW VIP {info['rw_vip']} on {', '.join(holders['rw']) or '-'}; "
        f"RO VIP {info['ro_vip']} on {', '.join(holders['ro']) or '-'}"
    )
    click.echo(f"  partitioned: {', '.join(info['partitioned']) or 'none'}")


@lab.command()
@prefix_option
def demo(prefix: str) -> None:
    """Walk through a switchover and a failure with live probes of both VIPs."""
    _require_root()
    the_lab = _load(prefix)
    from pgvip.lab.demo import run_demo

    sys.exit(_guard(lambda: run_demo(the_lab)))


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@prefix_option
@click.argument("host")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(prefix: str, host: str, argv: tuple[str, ...]) -> None:
    """Run a command inside a host's namespace: pgvip lab exec p1 -- ip addr."""
    _require_root()
    the_lab = _load(prefix)
    from pgvip.lab import netns

    hosts = ["sw", "etcd", "client", *the_lab.layout.node_names()]
    if host not in hosts:
        _fail(f"unknown host {host!r}: this lab has {', '.join(hosts)}")
    args = list(argv[1:] if argv and argv[0] == "--" else argv)
    if not args:
        _fail("no command given: pgvip lab exec HOST -- CMD ...")
    full = netns.exec_argv(the_lab.layout.namespace(host), args)
    sys.stdout.flush()
    os.execvp(full[0], full)


@lab.command()
@prefix_option
@click.argument("node")
@click.argument("what", type=click.Choice(["patroni", "postgres", "pgvip", "etcd"]))
def kill(prefix: str, node: str, what: str) -> None:
    """SIGKILL a component of a node (postgres = its postmaster; etcd on host etcd)."""
    _require_root()
    the_lab = _load(prefix)
    pid = _guard(lambda: the_lab.pid(node, what))
    if pid is None:
        click.echo(f"{what} on {node} is not running")
        return
    _guard(lambda: the_lab.kill(node, what))
    click.echo(f"killed {what} on {node} (PID {pid})")


@lab.command()
@prefix_option
@click.argument("node")
@click.argument("what", type=click.Choice(["patroni", "pgvip", "etcd"]))
def start(prefix: str, node: str, what: str) -> None:
    """Start a component that is not running (etcd on host etcd)."""
    _require_root()
    the_lab = _load(prefix)
    _guard(lambda: the_lab.start(node, what))
    click.echo(f"{what} on {node}: running (PID {_guard(lambda: the_lab.pid(node, what))})")


@lab.command()
@prefix_option
@click.argument("node")
def partition(prefix: str, node: str) -> None:
    """Cut a host off the lab network (its switch port goes down)."""
    _require_root()
    the_lab = _load(prefix)
    _guard(lambda: the_lab.partition(node))
    click.echo(f"{node} partitioned (switch port {the_lab.layout.switch_port(node)} down)")


@lab.command()
@prefix_option
@click.argument("node")
def heal(prefix: str, node: str) -> None:
    """Reconnect a partitioned host."""
    _require_root()
    the_lab = _load(prefix)
    _guard(lambda: the_lab.heal(node))
    click.echo(f"{node} healed (switch port {the_lab.layout.switch_port(node)} up)")


@lab.command()
@prefix_option
@click.option("--timeout", type=float, default=90.0, show_default=True)
def reset(prefix: str, timeout: float) -> None:
    """Heal every host, restart what is not running, and wait until ready."""
    _require_root()
    the_lab = _load(prefix)
    started = time.monotonic()
    _guard(lambda: the_lab.reset(timeout=timeout))
    click.echo(f"lab {prefix} ready again in {time.monotonic() - started:.1f} s")
