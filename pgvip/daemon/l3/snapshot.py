"""The `/status` instances of an L3 engine: the same schema as VRRP's, read as "MASTER =
this node announces the route, FAULT = it does not"; `master` names this node or nobody,
since no advert tells who else announces."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pgvip.status import InstanceInfo, PollInfo, TransitionInfo

if TYPE_CHECKING:
    from pgvip.daemon.instance_runner import TransitionRecord
    from pgvip.daemon.l3.engine import L3Engine
    from pgvip.daemon.l3.ro_route_watch import RoRouteWatch
    from pgvip.daemon.l3.route_runner import RouteRunner
    from pgvip.daemon.patroni_watch import PatroniWatch

    PollFn = Callable[[PatroniWatch | RoRouteWatch | None, str], PollInfo | None]


def transition_infos(records: Iterable[TransitionRecord]) -> list[TransitionInfo]:
    """An instance's recent transitions as the status schema has them (VRRP and L3 alike)."""
    return [
        {
            "at": t.at,
            "from_state": t.from_state,
            "to_state": t.to_state,
            "reason": t.reason,
            "reason_kind": t.kind.value,
            "priority": t.priority,
        }
        for t in records
    ]


def _info(
    runner: RouteRunner,
    engine: L3Engine,
    watch: PatroniWatch | RoRouteWatch | None,
    endpoint: str,
    poll: PollFn,
) -> InstanceInfo:
    h = runner.holder
    transitions: list[TransitionInfo] = [
        {
            "at": t.at,
            "from_state": t.from_state,
            "to_state": t.to_state,
            "reason": t.reason,
            "reason_kind": t.kind.value,
            "priority": t.priority,
        }
        for t in runner.transitions
    ]
    speaker = engine.speaker
    up = speaker.established if speaker is not None else 0
    return {
        "name": runner.name,
        "vrid": 0,
        "state": h.state.name,
        "priority": 0,
        "priority_reason": f"bgp: {up} of {len(engine.config.bgp.peers)} sessions established",
        "vips": [str(runner.vip)],
        "interface": engine.config.bgp.interface,
        "held": runner.held,
        "eligible": h.eligible,
        "eligibility_reason": watch.policy.reason if watch is not None else h.reason,
        "master": {
            "address": str(engine.source) if h.announced else None,
            "priority": 0,
            "is_self": h.announced,
            "heard_at": None,
        },
        "poll": poll(watch, endpoint),
        "last_takeover": runner.last_takeover,
        "transitions": transitions,
        "conflicts": [],
    }


def l3_instances(engine: L3Engine, poll: PollFn) -> dict[str, InstanceInfo]:
    out: dict[str, InstanceInfo] = {}
    if engine.rw is not None:
        out["rw"] = _info(engine.rw, engine, engine.rw_watch, "/primary", poll)
    if engine.ro is not None:
        out["ro"] = _info(engine.ro, engine, engine.ro_watch, "/cluster", poll)
    return out
