"""`pgvip status` (click's CliRunner) against a real StatusServer on loopback, a plain HTTP
server without the pgvip marker, a non-HTTP TCP service and a closed port."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pgvip.status.cli import EXIT_FAILED, EXIT_UNREACHABLE, status
from tests.integration.status.conftest import Live, status_config

CONFIG = """\
[patroni]
url = "http://127.0.0.1:8008"
[vrrp]
interface = "eth0"
[rw]
vip = "10.20.31.100/32"
[status]
listen = "{listen}"
port = {port}
"""


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    # No /etc/pgvip/pgvip.toml influence: every test names its config or URL explicitly.
    base = {"PGVIP_CONFIG": ""}
    return CliRunner().invoke(status, list(args), env={**base, **(env or {})})


def test_table(live: Live) -> None:
    result = run("--url", live.url)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("pgvip 0.1.0 on node1 (pid 4242")
    rw = next(line for line in lines if line.startswith("rw "))
    assert "MASTER" in rw and "10.20.31.100/32" in rw
    assert "RO backends: 2/2 healthy" in result.output
    assert "Recent transitions" in result.output


def test_json(live: Live) -> None:
    result = run("--url", live.url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == live.source.current


def test_table_follows_a_transition(live: Live) -> None:
    live.source.current["instances"]["rw"]["state"] = "FAULT"
    live.source.current["instances"]["rw"]["held"] = False
    rw = next(line for line in run("--url", live.url).output.splitlines() if line[:3] == "rw ")
    assert "FAULT" in rw


def test_unreachable_exits_3(closed_port: str) -> None:
    for args in ([], ["--json"]):
        result = run("--url", closed_port, *args)
        assert result.exit_code == EXIT_UNREACHABLE == 3
        assert "connection refused; is pgvip running" in result.output
        assert "Traceback" not in result.output


def test_not_pgvip_http_exits_4(plain_http: str) -> None:
    result = run("--url", plain_http)
    assert result.exit_code == EXIT_FAILED == 4
    assert "answered, but not as pgvip" in result.output
    assert "Python" in result.output and "aiohttp" in result.output  # its Server header


def test_not_http_exits_4(not_http: str) -> None:
    result = run("--url", not_http)
    assert result.exit_code == EXIT_FAILED
    assert "did not answer in HTTP" in result.output


def test_auth_from_flags(servers: Callable[..., Live], tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    live = servers(status_config(username="ops", password_file=str(pw)))
    denied = run("--url", live.url)
    assert denied.exit_code == EXIT_FAILED and "authentication failed" in denied.output
    ok = run("--url", live.url, "--username", "ops", "--password-file", str(pw), "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["schema"] == 1
    half = run("--url", live.url, "--username", "ops")
    assert half.exit_code == 2 and "--username needs --password-file" in half.output


def test_url_and_auth_from_the_config(servers: Callable[..., Live], tmp_path: Path) -> None:
    """With no --url, the config's [status] tells where the local daemon listens."""
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    live = servers(status_config(username="ops", password_file=str(pw)))
    conf = tmp_path / "pgvip.toml"
    conf.write_text(
        CONFIG.format(listen="127.0.0.1", port=live.server.port)
        + f'username = "ops"\npassword_file = "{pw}"\n'
    )
    result = run("--config", str(conf), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pgvip"]["node"] == "node1"
    via_env = run("--json", env={"PGVIP_CONFIG": str(conf)})
    assert via_env.exit_code == 0, via_env.output


def test_wildcard_listen_is_reached_on_loopback(
    servers: Callable[..., Live], tmp_path: Path
) -> None:
    live = servers()
    conf = tmp_path / "pgvip.toml"
    conf.write_text(CONFIG.format(listen="0.0.0.0", port=live.server.port))
    result = run("--config", str(conf))
    assert result.exit_code == 0, result.output


def test_explicit_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    conf = tmp_path / "pgvip.toml"
    conf.write_text("[status]\nport = 8010\n")
    result = run("--config", str(conf))
    assert result.exit_code == 2
    assert "patroni.url is required" in result.output


@pytest.mark.parametrize("bad", ["--timeout=0", "--transitions=-1"])
def test_bad_options_are_usage_errors(bad: str) -> None:
    assert run("--url", "http://127.0.0.1:1", bad).exit_code == 2


def test_no_arguments_reach_the_default_url(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pgvip status` alone asks http://127.0.0.1:8010 when no config file exists; the
    default is pointed at the test server so the test does not depend on port 8010."""
    import pgvip.status.cli as cli
    import pgvip.status.client as client

    assert client.DEFAULT_URL == "http://127.0.0.1:8010"
    monkeypatch.setattr(cli, "_DEFAULT_CONFIG", "/nonexistent/pgvip.toml")
    monkeypatch.setattr(client, "DEFAULT_URL", live.url)
    result = run()
    assert result.exit_code == 0, result.output
    assert "rw   MASTER" in result.output
