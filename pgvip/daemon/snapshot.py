"""Builds the `/status` snapshot (schema in pgvip/status and docs/openapi.yaml) from the
engine's live objects and a few facts about the process. Read-only: it never touches the
network."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pgvip import __version__
from pgvip.daemon.l3.engine import L3Engine
from pgvip.daemon.l3.snapshot import l3_instances, transition_infos
from pgvip.dataplane.conflict_watch import mac_text
from pgvip.status import (
    SNAPSHOT_SCHEMA,
    ConflictInfo,
    InstanceInfo,
    PatroniInfo,
    PollInfo,
    Snapshot,
)

if TYPE_CHECKING:
    from pgvip.daemon.engine import Engine
    from pgvip.daemon.instance_runner import InstanceRunner
    from pgvip.daemon.l3.ro_route_watch import RoRouteWatch
    from pgvip.daemon.patroni_watch import PatroniWatch
    from pgvip.daemon.ro.role_watch import RoleWatch
    from pgvip.status import Instances, RoInfo

    Watch = PatroniWatch | RoleWatch | RoRouteWatch


@dataclass(frozen=True)
class DaemonFacts:
    """What the snapshot needs from the process itself, beyond the engine."""

    started_at: float  # epoch
    ready: bool
    patroni_url: str
    loop_stalls: int = 0
    loop_stall_max_s: float = 0.0


def _wall(t: float | None) -> float | None:
    """A monotonic instant as epoch seconds."""
    if t is None:
        return None
    return time.time() - (time.monotonic() - t)


def _poll(watch: Watch | None, endpoint: str) -> PollInfo | None:
    if watch is None or watch.last is None:
        return None
    obs = watch.last
    return {
        "endpoint": endpoint,
        "verdict": obs.verdict.value,
        "reason": obs.reason,
        "cause": obs.cause,
        "at": _wall(obs.at),
        "latency": obs.latency,
        "polls": watch.polls,
        "errors": dict(watch.errors),
    }


def instance_info(
    runner: InstanceRunner, interface: str, watch: Watch | None, endpoint: str
) -> InstanceInfo:
    inst = runner.instance
    master = inst.master_address
    own = inst.state.name == "MASTER"
    if own:
        master_address: str | None = str(inst.config.primary_address)
    else:
        master_address = str(master) if master else None
    transitions = transition_infos(runner.transitions)
    return {
        "name": runner.name,
        "vrid": inst.config.vrid,
        "state": inst.state.name,
        "priority": inst.priority,
        "priority_reason": inst.priority_reason,
        "vips": [str(v) for v in inst.vips],
        "interface": interface,
        "held": runner.held,
        "eligible": inst.eligible,
        # The policy's latest reason: it changes while eligibility does not (e.g. "Patroni
        # unreachable, but failsafe mode was active"); the runner's is the last change. A
        # down link overrides both.
        "eligibility_reason": watch.policy.reason
        if watch is not None and runner.link_gate.link_usable
        else runner.eligibility_reason,
        "master": {
            "address": master_address,
            "priority": inst.priority if own else inst.master_priority,
            "is_self": own,
            "heard_at": _wall(inst.last_advert_at),
        },
        "poll": _poll(watch, endpoint),
        "last_takeover": runner.last_takeover,
        "transitions": transitions,
        "conflicts": _conflicts(runner),
    }


def _conflicts(runner: InstanceRunner) -> list[ConflictInfo]:
    if runner.conflicts is None:
        return []
    mine = {v.ip for v in runner.vips}
    return [
        {
            "vip": str(c.ip),
            "mac": mac_text(c.mac),
            "kind": c.kind,
            "count": c.count,
            "last_seen": _wall(c.at) or time.time(),
        }  # fmt: skip
        for c in runner.conflicts.detector.active(time.monotonic())
        if c.ip in mine
    ]


def _patroni(watch: PatroniWatch | None, url: str) -> PatroniInfo:
    """This node's Patroni as the RW watch last read it from `/patroni`."""
    status = watch.status if watch is not None else None
    checked_at = watch.status_at if watch is not None else None
    return {
        "url": url,
        "member": status.name if status else None,
        "role": status.role if status else None,
        "state": status.state if status else None,
        "timeline": status.timeline if status else None,
        "failsafe_active": status.failsafe_mode_is_active if status else None,
        "checked_at": _wall(checked_at),
    }


def build_snapshot(engine: Engine | L3Engine | None, facts: DaemonFacts) -> Snapshot:
    instances: dict[str, InstanceInfo] = {}
    ro: RoInfo | None = None
    rw_watch: PatroniWatch | None = None
    if isinstance(engine, L3Engine):
        instances = l3_instances(engine, _poll)
        rw_watch = engine.rw_watch
    elif engine is not None:
        rw_watch = engine.rw.watch if engine.rw is not None else None
        interface = engine.config.vrrp.interface
        if engine.rw is not None:
            rw = engine.rw
            instances["rw"] = instance_info(rw.runner, interface, rw.watch, "/primary")
        if engine.ro is not None:
            ro_pipe = engine.ro
            instances["ro"] = instance_info(ro_pipe.runner, interface, ro_pipe.watch, "/patroni")
        ro = engine.ro_info()
    patroni = _patroni(rw_watch, facts.patroni_url)
    return {
        "schema": SNAPSHOT_SCHEMA,
        "now": time.time(),
        "pgvip": {
            "version": __version__,
            "node": patroni["member"] or socket.gethostname(),
            "pid": os.getpid(),
            "started_at": facts.started_at,
            "ready": facts.ready,
            "loop_stalls": facts.loop_stalls,
            "loop_stall_max_s": round(facts.loop_stall_max_s, 3),
        },
        "instances": cast("Instances", instances),
        "patroni": patroni,
        "ro": ro,
    }
