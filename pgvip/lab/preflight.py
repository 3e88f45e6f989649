"""Checks `lab up` makes before it creates anything: root, binaries and users, a subnet that
collides with nothing in the root namespace, and no lab already using the prefix.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pgvip.lab import netns
from pgvip.lab.layout import MAX_NODES, LabLayout

SETUP_COMMAND = "sudo scripts/setup.sh"


class PreflightError(RuntimeError):
    """The lab cannot be built here as asked; the message says what to fix."""


def require_root(euid: int | None = None) -> None:
    uid = os.geteuid() if euid is None else euid
    if uid != 0:
        raise PreflightError(
            "the lab needs root (it creates network namespaces and runs PostgreSQL as postgres);"
            " run it with sudo"
        )


def missing_binaries(
    pg_bin: Path, venv_bin: Path, *, pgvip: bool, etcd_bin: Path = Path("/usr/bin/etcd")
) -> list[str]:
    """The executables the lab needs that are absent, each named with its full path."""
    needed = [
        pg_bin / name
        for name in ("postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "psql")
    ]
    needed += [etcd_bin, venv_bin / "patroni"]
    if pgvip:
        needed.append(venv_bin / "pgvip")
    missing = [str(path) for path in needed if not os.access(path, os.X_OK)]
    missing += [tool for tool in ("ip", "setpriv", "env") if shutil.which(tool) is None]
    return missing


def require_binaries(
    pg_bin: Path, venv_bin: Path, *, pgvip: bool, etcd_bin: Path = Path("/usr/bin/etcd")
) -> None:
    missing = missing_binaries(pg_bin, venv_bin, pgvip=pgvip, etcd_bin=etcd_bin)
    if missing:
        raise PreflightError(
            f"missing {', '.join(missing)}: install them with `{SETUP_COMMAND}`"
            + (
                " (or pass --pg-bin DIR for another PostgreSQL)"
                if any(m.startswith(str(pg_bin)) for m in missing)
                else ""
            )
        )


def require_users(*, pgvip: bool) -> None:
    users = ["postgres"] + (["pgvip"] if pgvip else [])
    absent = []
    for user in users:
        try:
            pwd.getpwnam(user)
        except KeyError:
            absent.append(user)
    if absent:
        raise PreflightError(
            f"missing system user {', '.join(absent)}: `{SETUP_COMMAND}` creates it"
        )


def subnet_conflicts(
    subnet: ipaddress.IPv4Network,
    addresses: Iterable[tuple[str, ipaddress.IPv4Interface]],
    routes: Iterable[Mapping[str, object]],
) -> list[str]:
    """What in the root namespace overlaps the subnet: addresses, and routes other than default.

    A default route covers everything and is not a collision; any narrower route that overlaps
    (including another lab's `unreachable` guard) is.
    """
    found: list[str] = []
    for ifname, iface in addresses:
        if iface.network.overlaps(subnet):
            found.append(f"address {iface} on {ifname}")
    for route in routes:
        net = netns.route_network(route)
        if net is None or net.prefixlen == 0 or not net.overlaps(subnet):
            continue
        kind = str(route.get("type", "unicast"))
        where = f" dev {route['dev']}" if route.get("dev") else ""
        table = f" table {route['table']}" if route.get("table") else ""
        found.append(f"route {kind} {route.get('dst')}{where}{table}")
    # The same /8 shows up as an address and as its local/broadcast routes; say it once.
    return list(dict.fromkeys(found))


def require_free_subnet(subnet: ipaddress.IPv4Network) -> None:
    conflicts = subnet_conflicts(subnet, netns.root_addresses(), netns.root_routes())
    if conflicts:
        shown = "; ".join(conflicts[:4]) + ("; ..." if len(conflicts) > 4 else "")
        raise PreflightError(
            f"subnet {subnet} collides with the root namespace ({shown}); "
            "choose another with --subnet A.B.C.0/24"
        )


def candidate_namespaces(layout: LabLayout) -> list[str]:
    """Every namespace name a lab with this prefix could have, whatever its node count."""
    hosts = ["sw", "etcd", "client"] + [f"p{i}" for i in range(1, MAX_NODES + 1)]
    return [layout.namespace(h) for h in hosts]


def require_no_lab(layout: LabLayout, existing_namespaces: Sequence[str] | None = None) -> None:
    names = netns.list_namespaces() if existing_namespaces is None else existing_namespaces
    taken = [ns for ns in candidate_namespaces(layout) if ns in names]
    if layout.state_file.exists() or taken:
        what = f"state file {layout.state_file}" if layout.state_file.exists() else ""
        if taken:
            what += ("; " if what else "") + f"namespaces {', '.join(taken)}"
        raise PreflightError(
            f"a lab with prefix {layout.prefix!r} already exists ({what}); "
            f"remove it with `pgvip lab down --prefix {layout.prefix}` or pick another --prefix"
        )


def check_all(layout: LabLayout, *, pg_bin: Path, venv_bin: Path, pgvip: bool) -> None:
    """Every check, cheapest first; the first failure raises PreflightError."""
    require_root()
    require_binaries(pg_bin, venv_bin, pgvip=pgvip)
    require_users(pgvip=pgvip)
    require_no_lab(layout)
    require_free_subnet(layout.subnet)
