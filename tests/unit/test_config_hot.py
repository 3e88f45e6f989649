"""The reload rule and the CLI flags come from the schema rows: a key is hot-reloadable, or
has a flag, because its row says so, and nowhere else needs to know."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest

from pgvip.cli import main as cli_main
from pgvip.config import HOT_KEYS, SCHEMA, Config, config_from_mapping, without_hot_keys

BASE: dict[str, Any] = {
    "patroni": {"url": "http://127.0.0.1:8008"},
    "vrrp": {"interface": "eth0"},
    "rw": {"vip": "10.0.0.50/24"},
}


def _config(**change: dict[str, Any]) -> Config:
    doc = {section: dict(values) for section, values in BASE.items()}
    for section, values in change.items():
        doc.setdefault(section, {}).update(values)
    return config_from_mapping(doc)


def test_the_hot_keys_are_the_ones_a_running_election_can_take() -> None:
    """Pinned: marking a key hot decides whether a reload re-elects, so a change here must
    be deliberate (and tested by the reload integration tests)."""
    patroni = {"rise", "fall", "grace", "poll_interval", "fast_poll_interval",
               "fast_poll_window", "failsafe_keep", "failsafe_max"}  # fmt: skip
    whole = {s.name for s in SCHEMA if s.section in ("announce", "notify", "log", "status")}
    # The stale-ARP guard is built with the engine: turning it on or off rebuilds it.
    whole -= {"announce.reset_stale"}
    # The RO balancer's scheduler and persistence and its backend policy: the director
    # retunes (an IPVS service edit); forwarding, ports, polls and probes rebuild.
    ro = {"scheduler", "persistence_timeout", "max_lag", "rise", "fall", "drain_timeout",
          "fallback", "include_primary"}  # fmt: skip
    want = {f"patroni.{k}" for k in patroni} | {f"ro.{k}" for k in ro} | {"rw.priority"} | whole
    assert want == HOT_KEYS


@pytest.mark.parametrize(
    ("section", "key", "value", "hot"),
    [
        ("patroni", "poll_interval", 0.5, True),
        ("rw", "priority", 150, True),
        ("announce", "garp_count", 9, True),
        ("patroni", "timeout", 2.0, False),
        ("rw", "vrid", 70, False),
        ("vrrp", "advert_int", 50, False),
        ("ro", "scheduler", "wrr", True),
        ("ro", "forwarding", "dr", False),
        ("ro", "poll_interval", 0.2, False),
    ],
)
def test_without_hot_keys_ignores_exactly_the_hot_rows(
    section: str, key: str, value: Any, hot: bool
) -> None:
    assert (f"{section}.{key}" in HOT_KEYS) is hot
    old = _config()
    new = _config(**{section: {key: value}})
    assert new != old
    assert (without_hot_keys(new, old) == without_hot_keys(old, old)) is hot


def test_a_new_hot_row_is_honoured_without_other_edits() -> None:
    """Flip a cold row to hot in a copy of the schema: the rule follows the row."""
    old, new = _config(), _config(rw={"vrid": 70})
    import pgvip.config.model as model

    flipped = tuple(dataclasses.replace(s, hot=True) if s.name == "rw.vrid" else s for s in SCHEMA)
    original = model.SCHEMA
    model.SCHEMA = flipped
    try:
        assert without_hot_keys(new, old) == without_hot_keys(old, old)
    finally:
        model.SCHEMA = original
    assert without_hot_keys(new, old) != without_hot_keys(old, old)


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_every_schema_flag_is_an_option(command: str) -> None:
    cmd = cli_main.get_command(click.Context(cli_main), command)
    assert cmd is not None
    options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
    flags = {s.option for s in SCHEMA if s.option}
    assert flags == options - {"--config", "--help"}
