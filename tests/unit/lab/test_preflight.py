"""Tests for pgvip.lab.preflight's pure checks (no root, no namespaces touched)."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from pgvip.lab.layout import LabLayout
from pgvip.lab.preflight import (
    PreflightError,
    candidate_namespaces,
    missing_binaries,
    require_binaries,
    require_no_lab,
    require_root,
    subnet_conflicts,
)

NET = ipaddress.IPv4Network("10.20.30.0/24")


def iface(text: str) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(text)


def test_require_root() -> None:
    require_root(euid=0)
    with pytest.raises(PreflightError, match="needs root"):
        require_root(euid=1000)


def test_default_route_is_not_a_collision() -> None:
    routes = [{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"}]
    addresses = [("eth0", iface("192.0.2.2/24")), ("lo", iface("127.0.0.1/8"))]
    assert subnet_conflicts(NET, addresses, routes) == []


def test_address_in_or_covering_the_subnet_collides() -> None:
    assert subnet_conflicts(NET, [("eth1", iface("10.20.30.7/24"))], []) == [
        "address 10.20.30.7/24 on eth1"
    ]
    # A wider address network that contains the lab subnet is a collision too.
    assert subnet_conflicts(NET, [("eth1", iface("10.1.2.3/8"))], []) == [
        "address 10.1.2.3/8 on eth1"
    ]
    assert subnet_conflicts(NET, [("eth1", iface("10.20.31.1/24"))], []) == []


def test_routes_that_overlap_collide() -> None:
    routes = [
        {"type": "unreachable", "dst": "10.20.30.0/24"},
        {"dst": "10.0.0.0/8", "dev": "wg0"},
        {"dst": "10.20.30.128/25", "dev": "tun0", "table": "100"},
        {"dst": "10.20.30.9"},
        {"dst": "10.20.31.0/24", "dev": "eth2"},
        {"dst": "0.0.0.0/0", "dev": "eth0"},
    ]
    assert subnet_conflicts(NET, [], routes) == [
        "route unreachable 10.20.30.0/24",
        "route unicast 10.0.0.0/8 dev wg0",
        "route unicast 10.20.30.128/25 dev tun0 table 100",
        "route unicast 10.20.30.9",
    ]


def test_duplicates_are_reported_once() -> None:
    routes = [{"dst": "10.0.0.0/8", "dev": "x"}, {"dst": "10.0.0.0/8", "dev": "x"}]
    assert subnet_conflicts(NET, [], routes) == ["route unicast 10.0.0.0/8 dev x"]


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_missing_binaries_are_named_with_the_setup_command(tmp_path: Path) -> None:
    pg_bin, venv_bin = tmp_path / "pg", tmp_path / "venv"
    for name in ("postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "psql"):
        _executable(pg_bin / name)
    _executable(venv_bin / "patroni")
    etcd = tmp_path / "etcd"
    assert missing_binaries(pg_bin, venv_bin, pgvip=True, etcd_bin=etcd) == [
        str(etcd),
        str(venv_bin / "pgvip"),
    ]
    (pg_bin / "pg_rewind").unlink()
    with pytest.raises(PreflightError) as err:
        require_binaries(pg_bin, venv_bin, pgvip=False, etcd_bin=etcd)
    text = str(err.value)
    assert str(pg_bin / "pg_rewind") in text and str(etcd) in text
    assert "sudo scripts/setup.sh" in text and "--pg-bin" in text
    assert "pgvip" not in text.replace("pgvip.", "")  # not asked for with pgvip=False


def test_an_existing_state_file_means_an_existing_lab(tmp_path: Path) -> None:
    layout = LabLayout.create(prefix="t1", subnet="10.20.50.0/24", root=tmp_path)
    require_no_lab(layout, existing_namespaces=[])
    layout.state_file.parent.mkdir(parents=True)
    layout.state_file.write_text("{}")
    with pytest.raises(PreflightError, match="prefix 't1' already exists .*state file"):
        require_no_lab(layout, existing_namespaces=[])


def test_a_leftover_namespace_means_an_existing_lab(tmp_path: Path) -> None:
    layout = LabLayout.create(prefix="t1", subnet="10.20.50.0/24", nodes=2, root=tmp_path)
    # p5 is beyond this lab's node count but a lab with 5 nodes could have left it.
    with pytest.raises(PreflightError, match="namespaces t1-p5.*pgvip lab down --prefix t1"):
        require_no_lab(layout, existing_namespaces=["other-p5", "t1-p5"])
    require_no_lab(layout, existing_namespaces=["t10-sw", "t1-p6"])


def test_candidate_namespaces_cover_every_node_count(tmp_path: Path) -> None:
    layout = LabLayout.create(prefix="ab", nodes=2, root=tmp_path)
    names = candidate_namespaces(layout)
    assert names[:3] == ["ab-sw", "ab-etcd", "ab-client"]
    assert names[3:] == [f"ab-p{i}" for i in range(1, 6)]
    assert set(layout.all_namespaces()) <= set(names)
    assert os.sep not in "".join(names)
