"""Builds the `/status` snapshot (schema in pgvip/status and docs/openapi.yaml) from the
daemon's live objects. Read-only: it never touches the network."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from pgvip import __version__
from pgvip.status import (
    SNAPSHOT_SCHEMA,
    InstanceInfo,
    PatroniInfo,
    PollInfo,
    Snapshot,
    TransitionInfo,
    reason_kind,
)

if TYPE_CHECKING:
    from pgvip.daemon.instance_runner import InstanceRunner
    from pgvip.daemon.patroni_watch import PatroniWatch
    from pgvip.daemon.service import Daemon


def _wall(t: float | None) -> float | None:
    """A monotonic instant as epoch seconds."""
    if t is None:
        return None
    return time.time() - (time.monotonic() - t)


def _poll(watch: PatroniWatch | None, endpoint: str) -> PollInfo | None:
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
    runner: InstanceRunner, interface: str, watch: PatroniWatch | None, endpoint: str
) -> InstanceInfo:
    inst = runner.instance
    master = inst.master_address
    own = inst.state.name == "MASTER"
    if own:
        master_address: str | None = str(inst.config.primary_address)
    else:
        master_address = str(master) if master else None
    transitions: list[TransitionInfo] = [
        {
            "at": t.at,
            "from_state": t.from_state,
            "to_state": t.to_state,
            "reason": t.reason,
            "reason_kind": reason_kind(t.reason),
            "priority": t.priority,
        }
        for t in runner.transitions
    ]
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
    }


def _patroni(daemon: Daemon) -> PatroniInfo:
    engine = daemon.engine
    watch = engine.watches[0] if engine and engine.watches else None
    status: Any = watch.status if watch else None
    return {
        "url": daemon.config.patroni.url,
        "member": getattr(status, "name", None),
        "role": getattr(status, "role", None),
        "state": getattr(status, "state", None),
        "timeline": getattr(status, "timeline", None),
        "failsafe_active": getattr(status, "failsafe_mode_is_active", None),
        "checked_at": _wall(watch.status_at) if watch and watch.status_at is not None else None,
    }


def build_snapshot(daemon: Daemon) -> Snapshot:
    engine = daemon.engine
    instances: dict[str, InstanceInfo] = {}
    ro: Any = None
    if engine is not None:
        interface = engine.config.vrrp.interface
        for runner in engine.runners:
            watch = engine.watch_for(runner.name)
            endpoint = "/primary" if runner.name == "rw" else "/patroni"
            instances[runner.name] = instance_info(runner, interface, watch, endpoint)
        ro = engine.ro_info()
    patroni = _patroni(daemon)
    return {
        "schema": SNAPSHOT_SCHEMA,
        "now": time.time(),
        "pgvip": {
            "version": __version__,
            "node": patroni["member"] or socket.gethostname(),
            "pid": os.getpid(),
            "started_at": daemon.started_at,
            "ready": daemon.ready,
        },
        "instances": instances,  # type: ignore[typeddict-item]
        "patroni": patroni,
        "ro": ro,
    }
