"""Tests for vagrant/: the Vagrantfile and provision scripts parse and lint, agree with the lab
layout, and the configs they install (rendered by pgvip.lab.render) pass Patroni's and pgvip's
own validation. VMs cannot boot here; these are the checks that need none."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from pgvip.lab.layout import LabLayout
from tests.unit.lab.offline_patroni import validate_offline

REPO = Path(__file__).parents[3]
VAGRANT = REPO / "vagrant"
PATRONI = str(Path(sys.executable).with_name("patroni"))


def tool(name: str) -> str:
    path = shutil.which(name)
    # setup.sh installs both; a missing tool is a broken machine, not a reason to skip.
    assert path, f"{name} is not installed: run `sudo scripts/setup.sh`"
    return path


def test_vagrantfile_is_valid_ruby() -> None:
    result = subprocess.run(
        [tool("ruby"), "-c", str(VAGRANT / "Vagrantfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stdout


def test_provision_scripts_pass_shellcheck() -> None:
    scripts = sorted(VAGRANT.glob("*.sh"))
    assert {s.name for s in scripts} >= {
        "provision-common.sh",
        "provision-etcd.sh",
        "provision-node.sh",
    }
    result = subprocess.run(
        [tool("shellcheck"), "-x", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        assert "set -euo pipefail" in script.read_text()


def test_vagrantfile_agrees_with_the_layout() -> None:
    text = (VAGRANT / "Vagrantfile").read_text()
    layout = LabLayout.create()
    subnet = re.search(r'^SUBNET = "([\d.]+)"', text, re.M)
    assert subnet is not None
    prefix = subnet.group(1)
    assert f"{prefix}.0/24" == str(layout.subnet)
    assert f'ETCD_IP = "#{{SUBNET}}.{int(layout.etcd_ip.packed[3])}"' in text
    nodes = dict(re.findall(r'"(p\d)" => "#\{SUBNET\}\.(\d+)"', text))
    assert nodes == {n: str(layout.node_ip(n).packed[3]) for n in layout.node_names()}
    # Every provisioning script the Vagrantfile names exists.
    for path in re.findall(r'path: "([^"]+)"', text):
        assert (VAGRANT / path).is_file(), path


def test_scripts_install_what_the_renderer_writes() -> None:
    common = (VAGRANT / "provision-common.sh").read_text()
    node = (VAGRANT / "provision-node.sh").read_text()
    etcd = (VAGRANT / "provision-etcd.sh").read_text()
    assert "-m pgvip.lab.render" in common and "--vagrant" in common
    assert "render_dir=/var/lib/pgvip-vagrant/render" in common
    for script in (node, etcd):
        assert "render_dir=/var/lib/pgvip-vagrant/render" in script
    assert "$render_dir/$node/patroni.yml" in node
    assert "$render_dir/$node/pgvip.toml" in node
    assert "$render_dir/etcd.env" in etcd


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VM configs, rendered the way the VMs do: system python3 + PyYAML, no venv."""
    out = tmp_path_factory.mktemp("vagrant-render")
    python = "/usr/bin/python3"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [python, "-s", "-m", "pgvip.lab.render", "--vagrant", str(out), "--ro"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, f"{python} needs python3-yaml: {result.stderr}"
    return out


def test_rendered_patroni_configs_validate(rendered: Path, tmp_path: Path) -> None:
    for node in ("p1", "p2", "p3"):
        path = rendered / node / "patroni.yml"
        cfg = yaml.safe_load(path.read_text())
        assert cfg["postgresql"]["data_dir"] == "/var/lib/postgresql/15/main"
        assert cfg["postgresql"]["bin_dir"] == "/usr/lib/postgresql/15/bin"
        # The validator inspects an existing data_dir (PG_VERSION, permissions), and on this
        # machine /var/lib/postgresql/15/main may be Debian's own cluster: validate a copy
        # whose data_dir does not exist yet, as on a fresh VM. Everything else is verbatim.
        cfg["postgresql"]["data_dir"] = str(tmp_path / node / "main")
        copy = tmp_path / f"{node}.yml"
        copy.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = validate_offline(copy)
        assert result.returncode == 0, f"{node}: {result.stdout}{result.stderr}"


def test_rendered_pgvip_configs(rendered: Path) -> None:
    for node in ("p1", "p2", "p3"):
        doc = tomllib.loads((rendered / node / "pgvip.toml").read_text())
        assert doc["vrrp"]["interface"] == "eth1"
        assert doc["ro"] == {"vip": "10.20.30.49/24", "vrid": 49}


def test_rendered_pgvip_configs_load_with_the_daemon_schema(rendered: Path) -> None:
    from pgvip.config import load_config

    for node in ("p1", "p2", "p3"):
        assert load_config(rendered / node / "pgvip.toml", {}, {}) is not None


def test_render_interface_option(tmp_path: Path) -> None:
    from pgvip.lab import render

    assert render.main(["--vagrant", str(tmp_path), "--interface", "enp0s8"]) == 0
    doc = tomllib.loads((tmp_path / "p3" / "pgvip.toml").read_text())
    assert doc["vrrp"]["interface"] == "enp0s8"
    assert render.main(["--vagrant", str(tmp_path), "--interface", "a/b"]) == 2


def _apt_packages(text: str) -> set[str]:
    """The packages a provisioning script installs with apt-get install or apt_install."""
    packages: set[str] = set()
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split()
        if "()" in line or not (words[:1] == ["apt_install"] or "install" in words[1:]):
            continue
        if words[0] not in ("apt_install", "apt-get"):
            continue
        start = words.index("install") + 1 if "install" in words else 1
        packages |= {w for w in words[start:] if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w)}
    return packages


def _pip_requirements(text: str) -> set[str]:
    """The quoted requirements of a script's `"$venv/bin/pip" install -q ...` lines."""
    found: set[str] = set()
    for line in text.splitlines():
        if 'pip" install' in line:
            found |= set(re.findall(r'"([a-z][^"$]*)"', line))
    return found


def test_the_container_run_offers_everything_the_scripts_install() -> None:
    """scripts/vagrant-provision-test gives the containers no Internet: its base root must
    carry every package the scripts apt-get install and every requirement they pip install
    (else the run fails there, not here). Patroni's range is pyproject's `lab` extra."""
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    loader = SourceFileLoader("vagrant_harness", str(REPO / "scripts/vagrant-provision-test"))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    harness = module_from_spec(spec)
    loader.exec_module(harness)
    texts = [script.read_text() for script in VAGRANT.glob("provision-*.sh")]
    apt = set().union(*map(_apt_packages, texts))
    pip = set().union(*map(_pip_requirements, texts))
    assert {"etcd-server", "postgresql-15", "python3-yaml", "build-essential"} <= apt, apt
    assert apt <= set(harness.APT_PACKAGES), apt - set(harness.APT_PACKAGES)
    assert pip and pip <= set(harness.PIP_WANTS), pip
    lab = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert next(p for p in pip if p.startswith("patroni")) in lab["lab"]
