"""BirdSpeaker's session bookkeeping, without BIRD: what it logs as sessions come and go."""

from __future__ import annotations

import ipaddress
from typing import Any

from pgvip.dataplane.bgp.bird import SESSION_WARN_AFTER, BirdSpeaker
from pgvip.dataplane.bgp.bird_config import SpeakerSettings
from pgvip.dataplane.bgp.control import Session


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def bind(self, **_kw: Any) -> Log:
        return self

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


def _speaker(log: Log, clock: list[float]) -> BirdSpeaker:
    ip = ipaddress.ip_address
    settings = SpeakerSettings("lo", (ip("10.22.0.50"),), ip("10.20.0.51"), 65101, 65000,
                               (ip("10.20.0.1"),), 3)  # fmt: skip
    return BirdSpeaker(settings, binary="/usr/sbin/bird", runtime_dir="/nonexistent", name="t",
                       log=log, clock=lambda: clock[0])  # fmt: skip


UP = (Session("pgvip_peer1", "up", "Established"),)
ACTIVE = (Session("pgvip_peer1", "start", "Active"),)


def test_up_and_down_are_logged_with_the_peer_address() -> None:
    log, clock = Log(), [0.0]
    sp = _speaker(log, clock)
    sp._set_sessions(UP)
    sp._set_sessions(ACTIVE)
    sp._set_sessions(())
    events = [(lvl, ev, kw.get("peer")) for lvl, ev, kw in log.lines]
    assert events == [
        ("info", "BGP session established", "10.20.0.1"),
        ("warning", "BGP session down", "10.20.0.1"),
    ]
    assert sp.established == 0


def test_a_session_that_never_comes_up_is_reported_once() -> None:
    log, clock = Log(), [100.0]
    sp = _speaker(log, clock)
    sp._set_sessions(ACTIVE)
    clock[0] += SESSION_WARN_AFTER - 1
    sp._set_sessions(ACTIVE)
    assert not [x for x in log.lines if "not established" in x[1]]
    clock[0] += 2
    sp._set_sessions(ACTIVE)
    sp._set_sessions(ACTIVE)
    stuck = [x for x in log.lines if "not established" in x[1]]
    assert len(stuck) == 1 and stuck[0][2]["peer"] == "10.20.0.1"
    # Up again, then stuck again: reported again.
    sp._set_sessions(UP)
    sp._set_sessions(ACTIVE)
    clock[0] += SESSION_WARN_AFTER
    sp._set_sessions(ACTIVE)
    assert len([x for x in log.lines if "not established" in x[1]]) == 2
