"""The configuration schema: sources and precedence, every validation error, docs and redaction."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from pgvip.config import (
    DEFAULT_CONFIG_PATH,
    FLAG_KEYS,
    SCHEMA,
    SECTION_TYPES,
    Config,
    ConfigError,
    config_from_mapping,
    load_config,
    read_password_file,
    reference_markdown,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "pgvip.toml"

MINIMAL = """\
[patroni]
url = "http://127.0.0.1:8008"

[vrrp]
interface = "eth0"

[rw]
vip = "10.20.30.50/24"
"""


BASE: dict[str, dict[str, str]] = {
    "patroni": {"url": '"http://127.0.0.1:8008"'},
    "vrrp": {"interface": '"eth0"'},
    "rw": {"vip": '"10.20.30.50/24"'},
}


def cfg_text(**sections: dict[str, str]) -> str:
    """MINIMAL with keys added or replaced; values are TOML literals, e.g. {"vrid": "300"}."""
    merged = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in sections.items():
        merged.setdefault(name, {}).update(keys)
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
        for name, keys in merged.items()
    )


@pytest.fixture
def nowhere(tmp_path: Path) -> Path:
    """A default path with no file behind it, so /etc/pgvip on this machine never leaks in."""
    return tmp_path / "absent" / "pgvip.toml"


def write(tmp_path: Path, text: str, name: str = "pgvip.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(
    tmp_path: Path,
    text: str,
    env: dict[str, str] | None = None,
    flags: dict[str, object] | None = None,
) -> Config:
    return load_config(write(tmp_path, text), env or {}, flags or {})


def problems_of(
    tmp_path: Path,
    text: str,
    env: dict[str, str] | None = None,
    flags: dict[str, object] | None = None,
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env, flags)
    return str(info.value).splitlines()


# -- the example and the defaults ------------------------------------------------------


def test_the_example_config_parses_as_is() -> None:
    cfg = load_config(EXAMPLE, {}, {})
    assert cfg.path == EXAMPLE
    assert cfg.patroni.url == "http://127.0.0.1:8008"
    assert (cfg.patroni.timeout, cfg.patroni.poll_interval) == (1.0, 0.25)
    assert (cfg.patroni.rise, cfg.patroni.fall, cfg.patroni.grace) == (1, 3, None)
    assert cfg.vrrp.interface == "eth0"
    assert (cfg.vrrp.advert_int, cfg.vrrp.preempt, cfg.vrrp.preempt_delay) == (100, True, 0.0)
    assert cfg.vrrp.unicast_peers == () and cfg.vrrp.unicast_src is None
    assert cfg.rw.vip == ipaddress.ip_interface("10.20.30.50/24")
    assert (cfg.rw.vrid, cfg.rw.priority) == (50, 254)
    assert (cfg.announce.garp_count, cfg.announce.garp_interval) == (3, 1.1)
    assert cfg.notify.command is None
    assert (cfg.log.format, cfg.log.level) == ("auto", "info")
    assert (cfg.ro.vip, cfg.ro.vrid) == (ipaddress.ip_interface("10.20.30.49/24"), 51)
    assert cfg.warnings == ()


def test_defaults_of_the_new_sections(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    ro = cfg.ro
    assert (ro.vrid, ro.priority_replica, ro.priority_leader, ro.port) == (51, 254, 200, 5432)
    assert ro.max_lag == 16 * 1024 * 1024
    assert (ro.probe_sql, ro.probe_timeout, ro.rise, ro.fall) == (False, 1.0, 2, 2)
    assert (ro.drain_timeout, ro.fallback, ro.include_primary) == (10.0, "primary", False)
    assert (ro.dataplane, ro.scheduler, ro.forwarding) == ("auto", "rr", "nat")
    assert (ro.persistence_timeout, ro.poll_interval) == (0, 0.5)
    assert cfg.status.listen == ipaddress.ip_address("127.0.0.1")
    assert cfg.status.port == 8010
    assert (cfg.patroni.failsafe_keep, cfg.patroni.failsafe_max) == (True, 30.0)
    assert (cfg.rw.vrid, cfg.rw.priority) == (50, 254)


def test_schema_and_dataclasses_agree() -> None:
    for section, cls in SECTION_TYPES.items():
        schema_keys = [s.key for s in SCHEMA if s.section == section]
        assert schema_keys == [f.name for f in dataclasses.fields(cls)], section
    assert [f.name for f in dataclasses.fields(Config)][: len(SECTION_TYPES)] == list(SECTION_TYPES)


def test_flag_mapping_is_the_documented_one() -> None:
    assert FLAG_KEYS == {
        "patroni_url": "patroni.url",
        "interface": "vrrp.interface",
        "rw_vip": "rw.vip",
        "rw_vrid": "rw.vrid",
        "priority": "rw.priority",
        "ro_vip": "ro.vip",
        "ro_vrid": "ro.vrid",
    }


# -- sources and precedence ------------------------------------------------------------


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    text = MINIMAL + "vrid = 60\n"
    assert load(tmp_path, MINIMAL).rw.vrid == 50  # default
    assert load(tmp_path, text).rw.vrid == 60  # file
    env = {"PGVIP_RW_VRID": "70"}
    assert load(tmp_path, text, env).rw.vrid == 70  # env beats file
    assert load(tmp_path, text, env, {"rw_vrid": 80}).rw.vrid == 80  # flag beats env
    assert load(tmp_path, text, env, {"rw_vrid": "90"}).rw.vrid == 90  # flags may be text
    assert load(tmp_path, text, env, {"rw_vrid": None}).rw.vrid == 70  # None: flag not given


def test_everything_from_env_and_flags_without_a_file(nowhere: Path) -> None:
    env = {"PGVIP_PATRONI_URL": "http://10.0.0.1:8008", "PGVIP_RW_VIP": "10.0.0.50"}
    cfg = load_config(None, env, {"interface": "ens3"}, default_path=nowhere)
    assert cfg.path is None
    assert cfg.patroni.url == "http://10.0.0.1:8008"
    assert cfg.vrrp.interface == "ens3"
    assert cfg.rw.vip == ipaddress.ip_interface("10.0.0.50/32")


def test_default_file_is_read_when_present(tmp_path: Path) -> None:
    default = write(tmp_path, MINIMAL, "default.toml")
    cfg = load_config(None, {}, {}, default_path=default)
    assert cfg.path == default and cfg.vrrp.interface == "eth0"
    assert Path("/etc/pgvip/pgvip.toml") == DEFAULT_CONFIG_PATH


def test_pgvip_config_env_names_the_file_and_path_beats_it(tmp_path: Path, nowhere: Path) -> None:
    a = write(tmp_path, MINIMAL, "a.toml")
    b = write(tmp_path, MINIMAL.replace("eth0", "eth9"), "b.toml")
    env = {"PGVIP_CONFIG": str(b)}
    assert load_config(None, env, {}, default_path=nowhere).vrrp.interface == "eth9"
    assert load_config(a, env, {}, default_path=nowhere).vrrp.interface == "eth0"


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_explicit_file_is_an_error(tmp_path: Path, nowhere: Path, via_env: bool) -> None:
    missing = tmp_path / "nope.toml"
    env = {"PGVIP_CONFIG": str(missing)} if via_env else {}
    with pytest.raises(ConfigError) as info:
        load_config(None if via_env else missing, env, {}, default_path=nowhere)
    assert f"{missing}: cannot read config file: No such file or directory" in str(info.value)


def test_missing_default_file_with_nothing_else_names_the_required_keys(nowhere: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {}, {}, default_path=nowhere)
    lines = str(info.value).splitlines()
    assert lines == [
        "patroni.url is required: set [patroni] url = ... in the config file, "
        "PGVIP_PATRONI_URL or --patroni-url",
        "vrrp.interface is required: set [vrrp] interface = ... in the config file, "
        "PGVIP_VRRP_INTERFACE or --interface",
        "rw.vip is required: set [rw] vip = ... in the config file, PGVIP_RW_VIP or --rw-vip",
    ]


# -- env parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("No", False),
    ],
)
def test_env_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    assert load(tmp_path, MINIMAL, {"PGVIP_VRRP_PREEMPT": text}).vrrp.preempt is expected


def test_env_bad_boolean(tmp_path: Path) -> None:
    assert problems_of(tmp_path, MINIMAL, {"PGVIP_VRRP_PREEMPT": "maybe"}) == [
        'env PGVIP_VRRP_PREEMPT: vrrp.preempt = "maybe": '
        "expected true/false, 1/0 or yes/no, got 'maybe'"
    ]


def test_env_lists_are_comma_separated(tmp_path: Path) -> None:
    env = {
        "PGVIP_VRRP_UNICAST_SRC": "10.20.30.51",
        "PGVIP_VRRP_UNICAST_PEERS": " 10.20.30.52, 10.20.30.53 ,",
    }
    cfg = load(tmp_path, MINIMAL, env)
    assert cfg.vrrp.unicast_peers == (
        ipaddress.ip_address("10.20.30.52"),
        ipaddress.ip_address("10.20.30.53"),
    )
    assert cfg.vrrp.unicast_src == ipaddress.ip_address("10.20.30.51")


def test_env_numbers_and_sizes(tmp_path: Path) -> None:
    env = {
        "PGVIP_PATRONI_TIMEOUT": "0.5",
        "PGVIP_PATRONI_GRACE": "2",
        "PGVIP_RO_MAX_LAG": "1MB",
        "PGVIP_RO_PORT": "6432",
    }
    cfg = load(tmp_path, MINIMAL, env)
    assert (cfg.patroni.timeout, cfg.patroni.grace) == (0.5, 2.0)
    assert (cfg.ro.max_lag, cfg.ro.port) == (1024 * 1024, 6432)


def test_empty_env_value_unsets_an_optional_key(tmp_path: Path) -> None:
    text = MINIMAL + '\n[ro]\nvip = "10.20.30.49/24"\n'
    assert load(tmp_path, text).ro.vip == ipaddress.ip_interface("10.20.30.49/24")
    assert load(tmp_path, text, {"PGVIP_RO_VIP": ""}).ro.vip is None


def test_unknown_env_var_is_a_warning_not_an_error(tmp_path: Path) -> None:
    env = {
        "PGVIP_RW_VIPP": "10.0.0.1",
        "PGVIP_CONFIG": str(tmp_path / "pgvip.toml"),
        "PGVIP_VENV": "/opt/pgvip/venv",
        "PATH": "/usr/bin",
    }
    cfg = load(tmp_path, MINIMAL, env)
    assert [str(w) for w in cfg.warnings] == [
        "env PGVIP_RW_VIPP: unknown environment variable PGVIP_RW_VIPP, ignored "
        "(did you mean PGVIP_RW_VIP?)"
    ]
    assert cfg.warnings[0].severity == "warning"


# -- file problems ----------------------------------------------------------------------------


def test_value_error_names_file_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "vrid = 300\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, {})
    assert str(info.value) == f"{path}: rw.vrid = 300: must be 1-255"
    [problem] = info.value.problems
    assert (problem.key, problem.source, problem.value) == ("rw.vrid", str(path), "300")


def test_typo_gets_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[patroni]\n", "[patroni]\nulr = 'x'\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, {})
    assert str(info.value) == f"{path}: unknown key patroni.ulr (did you mean patroni.url?)"


def test_key_in_the_wrong_section_points_to_the_right_one(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, cfg_text(rw={"advert_int": "100"}))
    assert lines[0].endswith("unknown key rw.advert_int (did you mean vrrp.advert_int?)")


def test_unknown_section(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, MINIMAL + "\n[anounce]\ngarp_count = 2\n")
    assert lines == [
        f"{tmp_path / 'pgvip.toml'}: unknown section [anounce] (did you mean [announce]?)"
    ]


def test_key_outside_any_section(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, 'interface = "eth0"\n' + MINIMAL)
    assert lines[0].endswith(
        "unknown key interface (every key belongs in a [section]) (did you mean vrrp.interface?)"
    )


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "vrid 50\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, {})
    assert str(info.value).startswith(f"{path}:9:6: TOML syntax error: Expected '='")
    # The required keys are not reported again: the file as a whole is unusable.
    assert len(info.value.problems) == 1


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path, {}, {})


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("timeout", '"fast"', "patroni.timeout = \"fast\": expected a number, got 'fast'"),
        ("rise", "1.5", "patroni.rise = 1.5: expected an integer, got 1.5"),
        ("rise", "true", "patroni.rise = true: expected an integer, got true"),
        ("failsafe_keep", '"yes"', "expected true or false, got 'yes'"),
        ("url", "8008", "patroni.url = 8008: expected a string, got 8008"),
        ("timeout", "nan", "patroni.timeout = nan: expected a finite number, got nan"),
    ],
)
def test_wrong_types(tmp_path: Path, key: str, raw: str, expected: str) -> None:
    lines = problems_of(tmp_path, cfg_text(patroni={key: raw}))
    assert len(lines) == 1
    assert lines[0].endswith(expected), lines[0]


VALUE_ERRORS = [
    ("patroni", 'url = "127.0.0.1:8008"', "must be an http:// or https:// URL"),
    ("patroni", 'url = "ftp://db1"', "must be an http:// or https:// URL"),
    ("patroni", 'url = "http://u:pw@db1:8008"', "must not contain credentials"),
    ("patroni", 'url = "http://db1:99999"', "not a valid URL"),
    ("patroni", 'url = "http://db1:8008/?x=1"', "must not have a ?query"),
    ("patroni", "timeout = 0", "must be > 0 and <= 30"),
    ("patroni", "timeout = 31", "must be > 0 and <= 30"),
    ("patroni", "poll_interval = 0", "must be > 0 and <= 60"),
    ("patroni", "poll_interval = -1.0", "must be > 0 and <= 60"),
    ("patroni", "rise = 0", "must be 1-100"),
    ("patroni", "fall = 0", "must be 1-100"),
    ("patroni", "grace = 0.0", "must be > 0 and <= 3600"),
    ("patroni", "failsafe_max = 0", "must be > 0"),
    ("patroni", 'username = ""', "must not be empty"),
    ("vrrp", 'interface = "eth0/1"', "interface name"),
    ("vrrp", 'interface = "a-very-long-interface"', "1-15 characters"),
    ("vrrp", "advert_int = 0", "must be 1-4095"),
    ("vrrp", "advert_int = 4096", "must be 1-4095"),
    ("vrrp", "preempt_delay = -1", "must be >= 0"),
    ("vrrp", 'unicast_src = "10.20.30.51/24"', "is not an IPv4 or IPv6 address"),
    ("vrrp", 'unicast_peers = ["10.20.30.52", "bogus"]', "'bogus' is not an IPv4 or IPv6"),
    ("vrrp", 'unicast_peers = ["224.0.0.18"]', "must be a unicast address"),
    ("vrrp", 'unicast_peers = "10.20.30.52"', "expected a list of strings"),
    ("rw", 'vip = "10.20.30.300/24"', "not an IPv4 or IPv6 address"),
    ("rw", 'vip = "10.20.30.50/33"', "not an IPv4 or IPv6 address"),
    ("rw", 'vip = "10.20.30.0/24"', "is the network address of 10.20.30.0/24"),
    ("rw", 'vip = "10.20.30.255/24"', "is the broadcast address of 10.20.30.0/24"),
    ("rw", 'vip = "224.0.0.18"', "cannot be a multicast address"),
    ("rw", 'vip = "0.0.0.0"', "cannot be the unspecified address"),
    ("rw", 'vip = "127.0.0.2"', "cannot be a loopback address"),
    ("rw", "vrid = 0", "must be 1-255"),
    ("rw", "vrid = 256", "must be 1-255"),
    ("rw", "priority = 0", "must be 1-254"),
    ("rw", "priority = 255", "must be 1-254"),
    ("ro", 'vip = "fe80::/64"', "is the subnet-router anycast address of fe80::/64"),
    ("ro", 'vip = "::"', "cannot be the unspecified address"),
    ("ro", 'vip = "nope"', "not an IPv4 or IPv6 address"),
    ("ro", "vrid = 300", "must be 1-255"),
    ("ro", "priority_replica = 255", "must be 1-254"),
    ("ro", "priority_leader = 0", "must be 1-254"),
    ("ro", "port = 0", "must be 1-65535"),
    ("ro", 'max_lag = "lots"', "must be a byte count or a size like 16MB"),
    ("ro", "max_lag = -1", "must be >= 0 bytes"),
    ("ro", "probe_timeout = 0", "must be > 0"),
    ("ro", "rise = 0", "must be 1-100"),
    ("ro", "fall = 0", "must be 1-100"),
    ("ro", "drain_timeout = -1", "must be >= 0"),
    ("ro", 'fallback = "replica"', "must be one of primary, none"),
    ("ro", 'dataplane = "lvs"', "must be one of auto, ipvs, nftables"),
    ("ro", 'scheduler = "wrrr"', "must be one of rr, wrr, lc, wlc, sh, mh (did you mean wrr?)"),
    ("ro", 'forwarding = "masq"', "must be one of dr, nat, tun"),
    ("ro", "persistence_timeout = -5", "must be 0-86400"),
    ("ro", "poll_interval = 0", "must be > 0"),
    ("announce", "garp_count = 0", "must be 1-100"),
    ("announce", "garp_interval = 0.05", "must be >= 0.1 and <= 60"),
    ("announce", "garp_refresh = -1", "must be >= 0"),
    ("notify", 'command = "  "', "must not be empty"),
    ("notify", "timeout = 0", "must be > 0"),
    ("log", 'format = "xml"', "must be one of auto, journal, console, json"),
    ("log", 'level = "verbose"', "must be one of debug, info, warning, error, critical"),
    ("status", 'listen = "localhost"', "not an IPv4 or IPv6 address"),
    ("status", "port = 70000", "must be 1-65535"),
]


def _with(section: str, line: str) -> str:
    key, raw = (part.strip() for part in line.split("=", 1))
    return cfg_text(**{section: {key: raw}})


@pytest.mark.parametrize(("section", "line", "message"), VALUE_ERRORS)
def test_every_value_error_names_file_key_and_value(
    tmp_path: Path, section: str, line: str, message: str
) -> None:
    key, raw = (part.strip() for part in line.split("=", 1))
    lines = problems_of(tmp_path, _with(section, line))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tmp_path / 'pgvip.toml'}: {section}.{key} = ")
    if not raw.startswith("["):
        assert f"{section}.{key} = {raw}: " in lines[0]
    assert message in lines[0]


def test_fe80_host_is_fine_but_its_network_address_is_not(tmp_path: Path) -> None:
    cfg = load(tmp_path, cfg_text(rw={"vip": '"fe80::50/64"'}, ro={"vip": '"fe80::49/64"'}))
    assert cfg.ro.vip == ipaddress.ip_interface("fe80::49/64")


def test_vip_without_prefix_is_a_host_address(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL.replace("10.20.30.50/24", "10.20.30.50"))
    assert cfg.rw.vip == ipaddress.ip_interface("10.20.30.50/32")
    cfg = load(tmp_path, MINIMAL.replace("10.20.30.50/24", "2001:db8::50"))
    assert cfg.rw.vip == ipaddress.ip_interface("2001:db8::50/128")


@pytest.mark.parametrize(
    ("raw", "size"),
    [("0", 0), ("1024", 1024), ('"1MB"', 1 << 20), ('"16mb"', 16 << 20), ('"2 GB"', 2 << 30),
     ('"512kB"', 512 << 10), ('"100B"', 100), ('"1TB"', 1 << 40)],
)  # fmt: skip
def test_max_lag_units(tmp_path: Path, raw: str, size: int) -> None:
    assert load(tmp_path, _with("ro", f"max_lag = {raw}")).ro.max_lag == size


def test_choices_are_case_insensitive_and_normalised(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + '\n[log]\nlevel = "DEBUG"\nformat = "JSON"\n')
    assert (cfg.log.level, cfg.log.format) == ("debug", "json")


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = cfg_text(patroni={"ulr": '"x"', "timeout": "0"}, rw={"vrid": "0"})
    lines = problems_of(tmp_path, text, {"PGVIP_RW_PRIORITY": "high"}, {"priority": 0})
    assert len(lines) == 5, lines
    assert any("--priority: rw.priority = 0: must be 1-254" in line for line in lines)
    assert any('env PGVIP_RW_PRIORITY: rw.priority = "high"' in line for line in lines)


def test_a_bad_file_value_is_reported_even_when_a_flag_overrides_it(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, MINIMAL + "vrid = 999\n", flags={"rw_vrid": 60})
    assert lines == [f"{tmp_path / 'pgvip.toml'}: rw.vrid = 999: must be 1-255"]


def test_bad_flag_is_named_by_its_option(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, MINIMAL, flags={"rw_vip": "10.1.1.300"})
    assert lines == ['--rw-vip: rw.vip = "10.1.1.300": not an IPv4 or IPv6 address with an '
                     "optional /prefix"]  # fmt: skip


def test_unknown_flag_is_an_error(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, MINIMAL, flags={"rw_vipp": "10.0.0.1"})
    assert lines[0].startswith("--rw-vipp: unknown flag 'rw_vipp'")
    assert lines[0].endswith("(did you mean rw_vip?)")


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, "log = 3\n" + MINIMAL)
    assert lines[0].endswith("[log] must be a table, got 3")


# -- cross-key checks ----------------------------------------------------------------------


PEERS = '["10.20.30.52"]'
CROSS_ERRORS: list[tuple[dict[str, dict[str, str]], str]] = [
    ({"ro": {"vip": '"10.20.30.50/24"'}}, 'ro.vip = "10.20.30.50/24": same address as rw.vip'),
    ({"ro": {"vip": '"10.20.30.49/24"', "vrid": "50"}}, "ro.vrid = 50: same as rw.vrid"),
    ({"vrrp": {"unicast_peers": PEERS}},
     "vrrp.unicast_src is required when vrrp.unicast_peers is set"),
    ({"vrrp": {"unicast_src": '"10.20.30.51"', "unicast_peers": '["10.20.30.51", "10.20.30.52"]'}},
     "contains vrrp.unicast_src 10.20.30.51 (ourselves)"),
    ({"vrrp": {"unicast_src": '"10.20.30.51"', "unicast_peers": '["10.20.30.52", "10.20.30.52"]'}},
     "lists 10.20.30.52 more than once"),
    ({"vrrp": {"unicast_src": '"2001:db8::51"', "unicast_peers": PEERS}},
     "2001:db8::51 is IPv6 but rw.vip is IPv4"),
    ({"vrrp": {"unicast_src": '"2001:db8::51"'}}, "2001:db8::51 is IPv6 but rw.vip is IPv4"),
    ({"vrrp": {"unicast_src": '"10.20.30.51"', "unicast_peers": PEERS},
      "rw": {"vip": '"2001:db8::50/64"'}}, "10.20.30.52 is IPv4 but rw.vip is IPv6"),
    ({"ro": {"vip": '"2001:db8::49/64"'}},
     'ro.vip = "2001:db8::49/64": is IPv6 but rw.vip is IPv4: one pgvip process speaks VRRP'),
    ({"patroni": {"key_file": '"/k.pem"'}}, 'patroni.key_file = "/k.pem": needs patroni.cert_file'),
    ({"patroni": {"password_file": '"/p"'}}, "needs patroni.username"),
    ({"patroni": {"username": '"u"', "password": '"x"', "password_file": '"/p"'}}, "not both"),
    ({"status": {"cert_file": '"/c.pem"'}}, 'status.cert_file = "/c.pem": needs status.key_file'),
    ({"status": {"key_file": '"/k.pem"'}}, "needs status.cert_file"),
    ({"status": {"username": '"admin"'}}, "needs status.password_file"),
    ({"status": {"password_file": '"/p"'}}, "needs status.username"),
    ({"ro": {"dataplane": '"nftables"', "forwarding": '"dr"'}}, 'nftables supports only "nat"'),
    ({"ro": {"dataplane": '"nftables"', "scheduler": '"lc"'}}, "supports only rr and wrr"),
    ({"ro": {"dataplane": '"nftables"', "persistence_timeout": "60"}}, "has no persistence"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "message"), CROSS_ERRORS)
def test_cross_key_errors(tmp_path: Path, extra: dict[str, dict[str, str]], message: str) -> None:
    lines = problems_of(tmp_path, cfg_text(**extra))
    # Only a family mismatch may name two keys (unicast_src and unicast_peers).
    assert len(lines) == 1 or (len(lines) == 2 and "is IPv4 but" in message), lines
    assert all(line.startswith(str(tmp_path / "pgvip.toml")) for line in lines)
    assert message in lines[-1]


def test_cross_check_on_a_default_value_says_so(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, cfg_text(rw={"vrid": "51"}, ro={"vip": '"10.20.30.49/24"'}))
    assert lines == [
        "default: ro.vrid = 51: same as rw.vrid: each VIP needs its own VRRP router id"
    ]


def test_unicast_in_the_vip_family_is_fine(tmp_path: Path) -> None:
    peers = '["10.20.30.52", "10.20.30.53"]'
    cfg = load(tmp_path, cfg_text(vrrp={"unicast_src": '"10.20.30.51"', "unicast_peers": peers}))
    assert len(cfg.vrrp.unicast_peers) == 2


def test_both_vips_in_ipv6_are_fine(tmp_path: Path) -> None:
    cfg = load(tmp_path, cfg_text(rw={"vip": '"2001:db8::50/64"'}, ro={"vip": '"2001:db8::49/64"'}))
    assert cfg.ro.vip is not None and cfg.ro.vip.version == 6 and cfg.rw.vip.version == 6


@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        ({"announce": {"garp_interval": "0.5"}}, "announce.garp_interval = 0.5: below 1.0 s"),
        ({"patroni": {"ca_file": '"/ca.pem"'}},
         'patroni.ca_file = "/ca.pem": ignored: patroni.url is http://'),
    ],
)  # fmt: skip
def test_warnings_do_not_stop_loading(
    tmp_path: Path, extra: dict[str, dict[str, str]], warning: str
) -> None:
    cfg = load(tmp_path, cfg_text(**extra))
    assert [w.severity for w in cfg.warnings] == ["warning"]
    assert warning in str(cfg.warnings[0])


def test_error_message_lists_warnings_after_errors(tmp_path: Path) -> None:
    lines = problems_of(tmp_path, cfg_text(announce={"garp_interval": "0.5"}, rw={"vrid": "0"}))
    assert lines[0].endswith("rw.vrid = 0: must be 1-255")
    assert lines[1].startswith("warning: ") and "garp_interval" in lines[1]


# -- redaction, docs, helpers ----------------------------------------------------------------


def test_redacted_dict_hides_secrets_and_is_json(tmp_path: Path) -> None:
    text = cfg_text(
        patroni={"username": '"pgvip"', "password": '"hunter2"'},
        notify={"command": '"/usr/local/bin/notify --token abc123"'},
        ro={"vip": '"10.20.30.49/24"'},
        vrrp={"unicast_src": '"10.20.30.51"', "unicast_peers": PEERS},
    )
    cfg = load(tmp_path, text)
    data = cfg.redacted_dict()
    text = json.dumps(data)
    assert "hunter2" not in text and "abc123" not in text
    assert data["patroni"]["password"] == "<redacted>"
    assert data["notify"]["command"] == "<redacted>"
    assert data["patroni"]["username"] == "pgvip"
    assert data["rw"]["vip"] == "10.20.30.50/24"
    assert data["vrrp"]["unicast_peers"] == ["10.20.30.52"]
    assert data["config_file"] == str(tmp_path / "pgvip.toml")
    assert "hunter2" not in repr(cfg)


def test_redacted_dict_keeps_unset_secrets_as_null(tmp_path: Path) -> None:
    data = load(tmp_path, MINIMAL).redacted_dict()
    assert data["patroni"]["password"] is None
    assert set(data) == {"config_file", *SECTION_TYPES}


def test_reference_markdown_documents_every_key() -> None:
    doc = reference_markdown()
    for setting in SCHEMA:
        assert f"`{setting.env}`" in doc
        assert f"| `{setting.key}` |" in doc
    assert "| `url` | string (URL) | **required** | `PGVIP_PATRONI_URL` | `--patroni-url` |" in doc
    assert '`"16MB"`' in doc and "## [status]" in doc


def test_config_from_mapping_validates_like_a_file() -> None:
    data: dict[str, Any] = {
        "patroni": {"url": "http://10.20.30.51:8008"},
        "vrrp": {"interface": "eth0"},
        "rw": {"vip": "10.20.30.50/24", "vrid": 300},
    }
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, source="lab p1")
    assert str(info.value) == "lab p1: rw.vrid = 300: must be 1-255"
    data["rw"]["vrid"] = 50
    assert config_from_mapping(data).rw.vrid == 50


def test_read_password_file(tmp_path: Path) -> None:
    good = tmp_path / "pw"
    good.write_text("s3 cret\n")
    assert read_password_file(str(good)) == "s3 cret"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="patroni.password_file is empty"):
        read_password_file(str(empty))
    two = tmp_path / "two"
    two.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="single line"):
        read_password_file(str(two), "status.password_file")
    with pytest.raises(ConfigError) as info:
        read_password_file(str(tmp_path / "missing"))
    assert str(info.value) == (
        f"{tmp_path / 'missing'}: cannot read patroni.password_file: No such file or directory"
    )
