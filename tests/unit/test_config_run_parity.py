"""check-config = run: every configuration `check-config` accepts is one that `run` can build,
and every one either path rejects is rejected with a message, never a traceback (issue 14).

Hypothesis generates configurations from the schema itself (every key, values around each
range's edges, both address families, wrong types, unknown keys) through all three layers
(file, environment, flags). For each, the loader either raises ConfigError with messages, or
`blueprint.check_buildable` (what the engine builds from the config alone) must accept it.
The CLI half runs `pgvip check-config` on generated files and checks the exit status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgvip.cli import main
from pgvip.config import ConfigError, config_from_mapping
from pgvip.config.schema import SCHEMA
from pgvip.daemon.blueprint import check_buildable

VIPS = ["10.20.30.50/24", "10.20.30.49/24", "10.20.30.50", "10.20.30.0/24", "2001:db8::50/64",
        "2001:db8::49/64", "fe80::49/64", "2001:db8::49", "224.0.0.18", "nope"]  # fmt: skip
ADDRESSES = ["10.20.30.51", "10.20.30.52", "2001:db8::51", "2001:db8::52", "300.1.1.1"]
STRINGS = {
    "patroni.url": ["http://127.0.0.1:8008", "https://127.0.0.1:8008", "ftp://x", "127.0.0.1"],
    "vrrp.interface": ["eth0", "lo", "", "a" * 20],
    "ro.dataplane": ["auto", "ipvs", "nftables", "lvs"],
    "ro.scheduler": ["rr", "wrr", "lc", "wlc", "sh", "mh", "sed"],
    "ro.forwarding": ["nat", "dr", "tun", "masq"],
    "ro.fallback": ["primary", "none", "replica"],
    "ro.max_lag": ["16MB", "0", "1GB", "lots"],
    "log.format": ["auto", "console", "json", "xml"],
    "log.level": ["debug", "info", "error", "verbose"],
    "status.listen": ["127.0.0.1", "::1", "0.0.0.0", "localhost"],
    "patroni.username": ["pgvip", ""],
    "notify.command": ["/bin/true", "  "],
}
INTEGERS = [-1, 0, 1, 2, 3, 49, 50, 100, 101, 254, 255, 256, 4095, 65535, 65536, 86400, 86401]
NUMBERS = [-1.0, 0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.1, 3.0, 60.0, 61.0, 3600.0]
BASE = {
    "patroni": {"url": "http://127.0.0.1:8008"},
    "vrrp": {"interface": "eth0"},
    "rw": {"vip": "10.20.30.50/24", "vrid": 50},
}
# Keys that name files: a value would be a path on this machine, which run reads later.
FILES = {s.name for s in SCHEMA if s.name.endswith(("_file", "file"))}


def values_for(name: str, kind: str) -> st.SearchStrategy[Any]:
    if name.endswith(".vip"):
        return st.sampled_from(VIPS)
    if name == "vrrp.unicast_src":
        return st.sampled_from(ADDRESSES)
    if name == "vrrp.unicast_peers":
        return st.lists(st.sampled_from(ADDRESSES), max_size=3)
    if name in STRINGS:
        return st.sampled_from(STRINGS[name])
    wrong = st.sampled_from(["x", [1], {"a": 1}])
    if kind == "integer":
        return st.sampled_from(INTEGERS) | wrong
    if kind == "number":
        return st.sampled_from(NUMBERS) | st.sampled_from(INTEGERS) | wrong
    if kind == "boolean":
        return st.booleans() | st.sampled_from(["yes", 1])
    return st.sampled_from(["", "x", "value"]) | wrong


SETTABLE = [s for s in SCHEMA if s.name not in FILES]


@st.composite
def layers(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str], dict[str, object]]:
    """A file mapping, an environment and flags, each touching a few keys."""
    data: dict[str, Any] = {section: dict(keys) for section, keys in BASE.items()}
    if draw(st.booleans()):
        data["ro"] = {"vip": "10.20.30.49/24", "vrid": 49}
    for setting in draw(st.lists(st.sampled_from(SETTABLE), max_size=6, unique_by=id)):
        value = draw(values_for(setting.name, setting.kind))
        data.setdefault(setting.section, {})[setting.key] = value
    if draw(st.booleans()):
        data.setdefault(draw(st.sampled_from(["rw", "ro", "vrrp", "nosuch"])), {})["unknwn"] = 1
    env: dict[str, str] = {}
    for setting in draw(st.lists(st.sampled_from(SETTABLE), max_size=2, unique_by=id)):
        value = draw(values_for(setting.name, setting.kind))
        if isinstance(value, str | int | float | bool):
            env[setting.env] = str(value).lower() if isinstance(value, bool) else str(value)
    flags: dict[str, object] = {}
    flagged = [s for s in SETTABLE if s.flag]
    for setting in draw(st.lists(st.sampled_from(flagged), max_size=2, unique_by=id)):
        value = draw(values_for(setting.name, setting.kind))
        if isinstance(value, str | int | float):
            assert setting.flag is not None
            flags[setting.flag] = str(value)
    return data, env, flags


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_what_the_loader_accepts_run_can_build(
    given_layers: tuple[dict[str, Any], dict[str, str], dict[str, object]],
) -> None:
    data, env, flags = given_layers
    try:
        config = config_from_mapping(data, env, flags)
    except ConfigError as exc:
        assert exc.errors and all(str(p).strip() for p in exc.errors)
        return
    check_buildable(config)  # a ConfigError here: the loader missed what run refuses


def _toml(data: dict[str, Any]) -> str:
    def lit(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(lit(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {lit(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return "".join(
        f"[{section}]\n" + "".join(f"{k} = {lit(v)}\n" for k, v in keys.items())
        for section, keys in data.items()
    )


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(layers())
def test_check_config_exits_0_or_2_with_a_message_never_a_traceback(
    config_dir: Path,
    given_layers: tuple[dict[str, Any], dict[str, str], dict[str, object]],
) -> None:
    data, _env, _flags = given_layers
    path = config_dir / "pgvip.toml"
    path.write_text(_toml(data))
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)], env={})
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 0:
        assert "configuration OK" in result.output
    else:
        assert result.output.strip() and "Traceback" not in result.output
