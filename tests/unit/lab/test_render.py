"""Tests for pgvip.lab.render (and its etcd_config and toml_text parts): Patroni YAML, pgvip
TOML, etcd flags and the Vagrant variant."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pgvip.lab import etcd_config, render
from pgvip.lab.layout import LabLayout
from tests.unit.lab.offline_patroni import validate_offline

PATRONI = str(Path(sys.executable).with_name("patroni"))


@pytest.fixture
def layout(tmp_path: Path) -> LabLayout:
    return LabLayout.create(root=tmp_path / "lab")


def validate_patroni(path: Path) -> subprocess.CompletedProcess[str]:
    return validate_offline(path)


# -- Patroni ---------------------------------------------------------------


def test_patroni_identity_and_addresses(layout: LabLayout) -> None:
    cfg = render.patroni_config(layout, "p2")
    assert cfg["scope"] == "pgvip"
    assert cfg["name"] == "p2"
    assert cfg["restapi"] == {"listen": "0.0.0.0:8008", "connect_address": "10.20.30.52:8008"}
    assert cfg["etcd3"] == {"hosts": ["10.20.30.10:2379"]}
    pg = cfg["postgresql"]
    assert pg["listen"] == "*:5432"
    assert pg["connect_address"] == "10.20.30.52:5432"
    assert pg["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert pg["use_pg_rewind"] is True
    assert pg["authentication"]["superuser"] == {"username": "postgres", "password": "postgres"}
    assert pg["authentication"]["replication"] == {
        "username": "replicator",
        "password": "replicator",
    }


def test_patroni_directories_default_to_the_layout(layout: LabLayout) -> None:
    pg = render.patroni_config(layout, "p1")["postgresql"]
    assert pg["data_dir"] == str(layout.data_dir("p1"))
    assert pg["pgpass"] == str(layout.node_dir("p1") / "pgpass")
    assert pg["parameters"]["unix_socket_directories"] == str(layout.socket_dir("p1"))
    # Two nodes never share a socket directory: sockets are not per-namespace.
    other = render.patroni_config(layout, "p2")["postgresql"]["parameters"]
    assert other["unix_socket_directories"] != pg["parameters"]["unix_socket_directories"]
    assert "logging_collector" not in pg["parameters"]
    # Through a VIP, this is how a client learns which node answered.
    assert pg["parameters"]["pgvip.node"] == "p1"


def test_patroni_explicit_directories_and_bin(layout: LabLayout) -> None:
    pg = render.patroni_config(
        layout,
        "p3",
        pg_bin_dir="/opt/pg/bin",
        data_dir="/d",
        socket_dir=Path("/s"),
        pgpass="/p",
    )["postgresql"]
    assert (pg["bin_dir"], pg["data_dir"], pg["pgpass"]) == ("/opt/pg/bin", "/d", "/p")
    assert pg["parameters"]["unix_socket_directories"] == "/s"


def test_patroni_log_dir_turns_on_the_collector(layout: LabLayout) -> None:
    params = render.patroni_config(layout, "p2", log_dir=layout.log_dir)["postgresql"]["parameters"]
    assert params["logging_collector"] == "on"
    assert params["log_directory"] == str(layout.log_dir)
    assert params["log_filename"] == "p2-postgresql.log"


def test_patroni_dcs_timing_is_consistent(layout: LabLayout) -> None:
    dcs = render.patroni_config(layout, "p1")["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (20, 1, 9)
    # Patroni's own rule; breaking it makes a leader demote itself on a DCS hiccup.
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert dcs["maximum_lag_on_failover"] == 1048576
    assert dcs["failsafe_mode"] is True
    assert dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["parameters"] == {
        "wal_level": "replica",
        "hot_standby": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "wal_log_hints": "on",
    }
    assert render.patroni_config(layout, "p1")["bootstrap"]["initdb"] == [
        {"encoding": "UTF8"},
        "data-checksums",
    ]


def test_pg_hba_allows_only_the_lab_subnets(tmp_path: Path) -> None:
    layout = LabLayout.create(subnet="10.20.34.0/24", root=tmp_path)
    hba = render.patroni_config(layout, "p1")["postgresql"]["pg_hba"]
    assert "local all all trust" in hba
    assert "host all all 10.20.34.0/24 md5" in hba
    assert "host replication replicator 10.20.34.0/24 md5" in hba
    # The L3 fabric's client subnet (pgvip.lab.bgp_fabric) may connect, never replicate.
    assert "host all all 10.21.34.0/24 md5" in hba
    assert not any(line.startswith("host replication replicator 10.21.") for line in hba)
    for line in hba:
        fields = line.split()
        if fields[0] == "host":
            net = ipaddress.IPv4Network(fields[3])
            lab_nets = (layout.subnet, layout.routed_client_subnet)
            assert any(net.subnet_of(n) for n in lab_nets) or net.is_loopback, line
            assert fields[4] == "md5", line


def test_patroni_follows_subnet_and_prefix(tmp_path: Path) -> None:
    layout = LabLayout.create(prefix="pgvd2", subnet="10.20.34.0/24", nodes=5, root=tmp_path)
    cfg = render.patroni_config(layout, "p5")
    assert cfg["scope"] == "pgvd2"
    assert cfg["restapi"]["connect_address"] == "10.20.34.55:8008"
    assert cfg["etcd3"]["hosts"] == ["10.20.34.10:2379"]


def test_unknown_node_is_a_render_error(layout: LabLayout) -> None:
    with pytest.raises(render.RenderError, match=r"unknown node 'p4'.*p1, p2, p3"):
        render.patroni_config(layout, "p4")
    with pytest.raises(render.RenderError, match="unknown node"):
        render.pgvip_config(layout, "etcd")


def test_patroni_yaml_round_trips(layout: LabLayout) -> None:
    text = render.patroni_yaml(layout, "p1", pg_bin_dir="/x/bin")
    assert text.startswith("# Patroni configuration of p1")
    assert yaml.safe_load(text) == render.patroni_config(layout, "p1", pg_bin_dir="/x/bin")


@pytest.mark.parametrize("nodes", [2, 5])
def test_patroni_accepts_every_rendered_node(tmp_path: Path, nodes: int) -> None:
    layout = LabLayout.create(subnet="10.20.34.0/24", nodes=nodes, root=tmp_path)
    for node in layout.node_names():
        path = tmp_path / f"{node}.yml"
        path.write_text(render.patroni_yaml(layout, node, log_dir=layout.log_dir))
        result = validate_patroni(path)
        assert result.returncode == 0, f"{node}: {result.stdout}{result.stderr}"


def test_patroni_validator_is_not_a_rubber_stamp(layout: LabLayout, tmp_path: Path) -> None:
    cfg = render.patroni_config(layout, "p1", pg_bin_dir=str(tmp_path / "no-such-bin"))
    cfg["bootstrap"]["dcs"]["ttl"] = "twenty"
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(cfg))
    result = validate_patroni(path)
    assert result.returncode != 0
    assert "no-such-bin" in result.stdout + result.stderr


# -- pgvip -----------------------------------------------------------------


def test_pgvip_defaults_match_the_contract(layout: LabLayout) -> None:
    doc = tomllib.loads(render.pgvip_config(layout, "p1"))
    assert doc["patroni"]["url"] == "http://127.0.0.1:8008"
    assert doc["patroni"]["poll_interval"] == 0.1
    assert doc["vrrp"] == {
        "interface": "eth0",
        "advert_int": 20,
        "preempt": True,
        "preempt_delay": 0.0,
    }
    assert doc["rw"] == {"vip": "10.20.30.50/24", "vrid": 50, "priority": 200}
    assert doc["log"]["format"] == "json"
    assert doc["ro"] == {"vip": "10.20.30.49/24", "vrid": 49}
    assert "ro" not in tomllib.loads(render.pgvip_config(layout, "p1", ro=False))


def test_pgvip_sections_and_keys_exist_in_the_deploy_example(layout: LabLayout) -> None:
    example = tomllib.loads(
        (Path(__file__).parents[3] / "deploy" / "pgvip.toml").read_text(encoding="utf-8")
    )
    doc = tomllib.loads(render.pgvip_config(layout, "p2"))
    for section, keys in doc.items():
        assert section in example, section
        for key in keys:
            assert key in example[section], f"{section}.{key}"


def test_pgvip_ro_section_on_request(tmp_path: Path) -> None:
    layout = LabLayout.create(subnet="192.168.77.0/24", root=tmp_path)
    doc = tomllib.loads(render.pgvip_config(layout, "p1", ro=True))
    assert doc["ro"] == {"vip": "192.168.77.49/24", "vrid": 49}
    assert doc["rw"]["vip"] == "192.168.77.50/24"
    extra = tomllib.loads(render.pgvip_config(layout, "p1", ro={"port": 5432}))
    assert extra["ro"] == {"vip": "192.168.77.49/24", "vrid": 49, "port": 5432}


def test_pgvip_overrides(layout: LabLayout) -> None:
    text = render.pgvip_config(
        layout,
        "p3",
        interface="eth9",
        advert_int=100,
        poll_interval=0.25,
        announce={"garp_count": 5},
        rw={"priority": 150},
        log={"level": None},
    )
    doc = tomllib.loads(text)
    assert doc["vrrp"]["interface"] == "eth9"
    assert doc["vrrp"]["advert_int"] == 100
    assert doc["patroni"]["poll_interval"] == 0.25
    assert doc["announce"] == {"garp_count": 5}
    assert doc["rw"]["priority"] == 150
    assert doc["rw"]["vrid"] == 50
    assert "level" not in doc["log"]
    assert (
        "preempt_delay"
        not in tomllib.loads(render.pgvip_config(layout, "p3", preempt_delay=None))["vrrp"]
    )


def test_pgvip_bad_overrides_are_explained(layout: LabLayout) -> None:
    with pytest.raises(render.RenderError, match="unknown pgvip override 'advert_intt'"):
        render.pgvip_config(layout, "p1", advert_intt=5)
    with pytest.raises(render.RenderError, match="ambiguous pgvip override 'vrid'.*rw, ro"):
        render.pgvip_config(layout, "p1", ro=True, vrid=7)
    with pytest.raises(render.RenderError, match="names a section"):
        render.pgvip_config(layout, "p1", rw=5)
    with pytest.raises(render.RenderError, match="finite"):
        render.pgvip_config(layout, "p1", poll_interval=float("nan"))
    with pytest.raises(render.RenderError, match="TOML cannot carry"):
        render.pgvip_config(layout, "p1", notify={"command": object()})


@given(
    text=st.text(max_size=40),
    numbers=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4),
    ratio=st.floats(allow_nan=False, allow_infinity=False),
)
def test_pgvip_toml_values_round_trip(text: str, numbers: list[int], ratio: float) -> None:
    layout = LabLayout.create()
    rendered = render.pgvip_config(
        layout, "p1", notify={"command": text, "args": numbers, "ratio": ratio}
    )
    assert tomllib.loads(rendered)["notify"] == {"command": text, "args": numbers, "ratio": ratio}


def test_pgvip_config_loads_with_the_daemon_schema(layout: LabLayout, tmp_path: Path) -> None:
    # The lab must never hand the daemon a file its own loader rejects.
    from pgvip.config import load_config

    for node in layout.node_names():
        path = tmp_path / f"{node}.toml"
        path.write_text(render.pgvip_config(layout, node))
        assert load_config(path, {}, {}) is not None


# -- etcd ------------------------------------------------------------------


def test_etcd_argv(tmp_path: Path) -> None:
    layout = LabLayout.create(subnet="10.20.34.0/24", root=tmp_path)
    argv = etcd_config.etcd_argv(layout, etcd_bin="/opt/etcd")
    assert argv[0] == "/opt/etcd"
    flags = dict(arg[2:].split("=", 1) for arg in argv[1:])
    assert flags["data-dir"] == str(layout.etcd_dir)
    assert flags["advertise-client-urls"] == "http://10.20.34.10:2379"
    assert "http://10.20.34.10:2379" in flags["listen-client-urls"].split(",")
    assert flags["initial-cluster"] == "etcd=http://10.20.34.10:2380"
    # Only lab and loopback addresses: etcd must not listen on the root namespace's networks.
    for url in flags["listen-client-urls"].split(",") + [flags["listen-peer-urls"]]:
        host = ipaddress.IPv4Address(url.split("//")[1].rsplit(":", 1)[0])
        assert host in layout.subnet or host.is_loopback


def test_etcd_env_carries_the_same_settings(layout: LabLayout) -> None:
    env = etcd_config.etcd_env(layout, data_dir="/var/lib/etcd/x")
    values = {}
    for line in env.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value.strip('"')
    assert values["ETCD_DATA_DIR"] == "/var/lib/etcd/x"
    argv = etcd_config.etcd_argv(layout, data_dir="/var/lib/etcd/x")
    assert len(values) == len(argv) - 1
    for arg in argv[1:]:
        key, value = arg[2:].split("=", 1)
        assert values["ETCD_" + key.upper().replace("-", "_")] == value


# -- the Vagrant variant ---------------------------------------------------


def test_render_vagrant_entry_point(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pgvip.lab.render", "--vagrant", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    expected = {out / n / f for n in ("p1", "p2", "p3") for f in ("patroni.yml", "pgvip.toml")} | {
        out / "etcd.env"
    }
    assert {Path(p) for p in result.stdout.split()} == expected
    assert all(p.is_file() for p in expected)

    for index, node in enumerate(("p1", "p2", "p3")):
        cfg = yaml.safe_load((out / node / "patroni.yml").read_text())
        assert cfg["name"] == node
        assert cfg["postgresql"]["data_dir"] == "/var/lib/postgresql/15/main"
        assert cfg["postgresql"]["parameters"]["unix_socket_directories"] == "/var/run/postgresql"
        assert cfg["postgresql"]["connect_address"] == f"10.20.30.{51 + index}:5432"
        toml = tomllib.loads((out / node / "pgvip.toml").read_text())
        assert toml["vrrp"]["interface"] == "eth1"
        assert toml["rw"]["vip"] == "10.20.30.50/24"
        assert "ro" not in toml
    assert 'ETCD_ADVERTISE_CLIENT_URLS="http://10.20.30.10:2379"' in (out / "etcd.env").read_text()


def test_render_vagrant_ro_and_unwritable_outdir(tmp_path: Path) -> None:
    render.render_vagrant(tmp_path / "ro", ro=True)
    toml = tomllib.loads((tmp_path / "ro" / "p2" / "pgvip.toml").read_text())
    assert toml["ro"]["vip"] == "10.20.30.49/24"
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert render.main(["--vagrant", str(blocker / "sub")]) == 2


def test_render_imports_nothing_heavy() -> None:
    # The VMs run the generator with the system python3 + python3-yaml before any venv exists.
    code = (
        "import sys, pgvip.lab.render as r, pgvip.lab.layout as l;"
        "r.patroni_yaml(l.LabLayout.create(), 'p1');"
        "print(sorted(m for m in ('aiohttp','psycopg','pyroute2','click','structlog')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
