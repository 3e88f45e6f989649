"""The BIRD config pgvip writes: exactly the VIPs exported, graceful restart off."""

from __future__ import annotations

import ipaddress

import pytest

from pgvip.dataplane.bgp.bird_config import SpeakerSettings, render, router_id

ip = ipaddress.ip_address


def _settings(**kw: object) -> SpeakerSettings:
    base: dict[str, object] = dict(
        interface="lo", vips=(ip("10.22.0.50"), ip("10.22.0.49")), source=ip("10.20.0.51"),
        local_as=65101, peer_as=65000, peers=(ip("10.20.0.1"), ip("10.20.0.2")), hold_time=3,
    )  # fmt: skip
    base.update(kw)
    return SpeakerSettings(**base)  # type: ignore[arg-type]


def test_one_session_per_peer_and_only_the_vips_exported() -> None:
    text = render(_settings())
    assert text.count("protocol bgp ") == 2
    assert "neighbor 10.20.0.1 port 179 as 65000;" in text
    assert "neighbor 10.20.0.2 port 179 as 65000;" in text
    assert "if net ~ [ 10.22.0.50/32, 10.22.0.49/32 ] then accept; reject;" in text
    assert text.count("export filter pgvip_export") == 2
    assert text.count("import none") == 2
    assert 'interface "lo";' in text
    assert "router id 10.20.0.51;" in text
    assert "hold time 3; keepalive time 1;" in text


def test_graceful_restart_is_off_so_a_crash_cannot_leave_a_stale_route() -> None:
    text = render(_settings())
    assert text.count("  graceful restart off;") == 2
    assert text.count("long lived graceful restart off;") == 2


def test_listener_port_needs_no_privilege() -> None:
    assert "port 1179 as 65101" in render(_settings())


def test_bfd() -> None:
    assert "bfd" not in render(_settings())
    text = render(_settings(bfd=True, bfd_interval=0.05))
    assert "protocol bfd" in text and "min rx interval 50 ms" in text
    assert text.count("bfd on;") == 2


def test_ipv6() -> None:
    s = _settings(vips=(ip("fd00::50"),), source=ip("fd00::51"), peers=(ip("fd00::1"),))
    text = render(s)
    assert "ipv6 {" in text and "fd00::50/128" in text
    assert router_id(ip("fd00::51")) == "0.0.0.81"


@pytest.mark.parametrize(
    "kw",
    [dict(peers=()), dict(hold_time=2), dict(peers=(ip("fd00::1"),))],
)
def test_impossible_settings_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _settings(**kw)


def test_the_backstop_is_announced_as_a_static_route() -> None:
    assert "pgvip_backstop" not in render(_settings())
    text = render(_settings(backstop=ipaddress.ip_network("10.22.0.0/24")))
    assert "protocol static pgvip_backstop { ipv4; route 10.22.0.0/24 blackhole; }" in text
    assert "10.22.0.49/32, 10.22.0.0/24 ]" in text
