"""The CLI's contract: flag names, exit code 2 with one specific line for bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pgvip.cli import main

GOOD = """
[patroni]
url = "http://127.0.0.1:8008"
[vrrp]
interface = "lo"
[rw]
vip = "10.20.30.50/24"
"""


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env or {})
    return result.exit_code, result.output


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD)
    code, out = run("check-config", "--config", str(path))
    assert code == 0, out
    assert "configuration OK" in out


def test_check_config_describes_bgp_mode(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    bgp = '[bgp]\nlocal_as = 65101\npeer_as = 65000\npeers = ["10.20.30.1"]\n'
    rw = 'vip = "10.22.0.50"\nannounce = "bgp"'
    path.write_text(GOOD.replace('vip = "10.20.30.50/24"', rw) + bgp)
    code, out = run("check-config", "--config", str(path))
    assert code == 0, out
    assert "(bgp: rw 10.22.0.50/32 on lo, AS 65101 to AS 65000 at 10.20.30.1)" in out
    assert "vrid" not in out
    path.write_text(path.read_text().replace('peers = ["10.20.30.1"]', "peers = []"))
    code, out = run("check-config", "--config", str(path))
    assert code == 2 and "list the routers" in out


def test_check_config_names_key_file_and_value(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD.replace("[rw]", "[rw]\nvrid = 300"))
    code, out = run("check-config", "--config", str(path))
    assert code == 2
    assert str(path) in out and "rw.vrid" in out and "300" in out


def test_check_config_suggests_the_intended_key(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD.replace("[rw]", "[rw]\npriorty = 100"))
    code, out = run("check-config", "--config", str(path))
    assert code == 2
    assert "rw.priorty" in out and "rw.priority" in out


def test_flags_beat_env_which_beats_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD)
    env = {"PGVIP_RW_VRID": "60"}
    code, out = run("check-config", "--config", str(path), env=env)
    assert code == 0 and "vrid 60" in out
    code, out = run("check-config", "--config", str(path), "--rw-vrid", "70", env=env)
    assert code == 0 and "vrid 70" in out


def test_all_contract_flags_exist() -> None:
    code, out = run("run", "--help")
    assert code == 0
    for flag in (
        "--config",
        "--patroni-url",
        "--interface",
        "--rw-vip",
        "--rw-vrid",
        "--priority",
        "--ro-vip",
        "--ro-vrid",
    ):
        assert flag in out


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    code, out = run("check-config", "--config", str(tmp_path / "nope.toml"))
    assert code == 2
    assert "nope.toml" in out
    assert "Traceback" not in out


def test_rw_vip_equal_to_ro_vip_is_refused(tmp_path: Path) -> None:
    code, out = run(
        "check-config",
        "--config",
        str(tmp_path / "absent-is-fine-with-flags.toml"),
    )
    assert code == 2
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD)
    code, out = run("check-config", "--config", str(path), "--ro-vip", "10.20.30.50/24")
    assert code == 2
    assert "ro.vip" in out or "rw.vip" in out


def test_run_fails_fast_on_a_missing_interface(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD.replace('interface = "lo"', 'interface = "nosuch0"'))
    code, out = run("run", "--config", str(path))
    assert code == 2
    assert "interface nosuch0 does not exist" in out
    assert len(out.strip().splitlines()) == 1


def test_release_needs_an_interface_or_a_config() -> None:
    code, out = run("release")
    assert code == 2
    assert "give --interface IFNAME or --config FILE" in out


def test_release_refuses_a_bad_config_by_name(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD.replace("[rw]", "[rw]\nvrid = 300"))
    code, out = run("release", "--config", str(path))
    assert code == 2
    assert str(path) in out and "rw.vrid" in out


def test_probe_sql_without_psycopg_is_refused_by_check_config_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg is the optional `sql` extra: a config that needs it fails at once, exit 2."""
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD + '[ro]\nvip = "10.20.30.49/24"\nprobe_sql = true\n')
    code, out = run("check-config", "--config", str(path))
    assert code == 0, out  # psycopg is installed here (the lab and test extras)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    for command in ("check-config", "run"):
        code, out = run(command, "--config", str(path))
        assert code == 2, out
        assert "probe_sql = true needs psycopg" in out and "pgvip[sql]" in out
        assert "Traceback" not in out
    # Without probe_sql nothing imports psycopg: the same file minus that line is fine.
    path.write_text(GOOD + '[ro]\nvip = "10.20.30.49/24"\n')
    code, out = run("check-config", "--config", str(path))
    assert code == 0, out
