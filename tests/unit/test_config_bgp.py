"""The [bgp] section and rw/ro.announce: what bgp mode needs, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from pgvip.config import ConfigError, config_from_mapping
from pgvip.daemon.blueprint import check_buildable


def _data(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = {
        "patroni": {"url": "http://127.0.0.1:8008"},
        "vrrp": {"interface": "eth0"},
        "rw": {"vip": "10.22.0.50", "announce": "bgp"},
        "ro": {"vip": "10.22.0.49", "announce": "bgp"},
        "bgp": {"local_as": 65101, "peer_as": 65000, "peers": ["10.20.0.1", "10.20.0.2"]},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def _problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as exc:
        config_from_mapping(data)
    return str(exc.value)


def test_a_complete_bgp_config_loads_and_builds() -> None:
    cfg = config_from_mapping(_data())
    check_buildable(cfg)
    assert cfg.rw.announce == cfg.ro.announce == "bgp"
    assert cfg.bgp.interface == "lo" and cfg.bgp.hold_time == 3 and not cfg.bgp.bfd
    assert [str(p) for p in cfg.bgp.peers] == ["10.20.0.1", "10.20.0.2"]


def test_vrrp_stays_the_default_and_needs_no_bgp_section() -> None:
    data = {"patroni": {"url": "http://127.0.0.1:8008"}, "vrrp": {"interface": "eth0"}}
    cfg = config_from_mapping(data | {"rw": {"vip": "10.0.0.5/24"}})
    assert cfg.rw.announce == "vrrp" and cfg.bgp.local_as is None


def test_bgp_mode_needs_the_as_numbers_and_peers() -> None:
    data = _data()
    data["bgp"] = {"peers": []}
    text = _problems(data)
    assert "bgp.local_as" in text and "bgp.peer_as" in text and "list the routers" in text


def test_mixing_vrrp_and_bgp_is_refused() -> None:
    text = _problems(_data(ro={"announce": "vrrp"}))
    assert "mixing VRRP and BGP is not supported" in text


def test_a_vip_with_a_prefix_is_refused_in_bgp_mode() -> None:
    text = _problems(_data(rw={"vip": "10.22.0.50/24"}))
    assert "host route" in text


def test_ipv6_needs_a_global_source() -> None:
    data = _data(rw={"vip": "fd00::50"}, bgp={"peers": ["fd00::1"]})
    del data["ro"]
    assert "bgp.source" in _problems(data)
    data["bgp"]["source"] = "fd00::51"
    assert config_from_mapping(data).bgp.source is not None


def test_peers_of_another_family_are_refused() -> None:
    assert "pgvip announces a VIP over sessions of its family" in _problems(
        _data(bgp={"peers": ["fd00::1"]})
    )


def test_bfd_slower_than_the_hold_time_is_pointless() -> None:
    text = _problems(_data(bgp={"bfd": True, "bfd_interval": 1.0}))
    assert "bgp.bfd_interval" in text
    assert config_from_mapping(_data(bgp={"bfd": True, "bfd_interval": 0.1})).bgp.bfd


def test_the_backstop_must_cover_the_vips_and_stay_small() -> None:
    assert str(config_from_mapping(_data(bgp={"backstop": "10.22.0.0/24"})).bgp.backstop) == (
        "10.22.0.0/24"
    )
    assert "does not cover rw.vip" in _problems(_data(bgp={"backstop": "10.22.0.48/31"}))
    assert "too wide" in _problems(_data(bgp={"backstop": "10.0.0.0/8"}))
    assert "not a network" in _problems(_data(bgp={"backstop": "10.22.0.1/24"}))
