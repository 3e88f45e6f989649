"""Snapshots for the status tests: one builder whose parts a test can change."""

from __future__ import annotations

import copy
from typing import Any

from pgvip.status import (
    BackendInfo,
    InstanceInfo,
    RoInfo,
    Snapshot,
    TransitionInfo,
)

NOW = 1_780_000_000.0


def transition(
    at: float, frm: str, to: str, reason: str, priority: int = 200, *, kind: str
) -> TransitionInfo:
    return {
        "at": at,
        "from_state": frm,
        "to_state": to,
        "reason": reason,
        "reason_kind": kind,
        "priority": priority,
    }


def instance(name: str = "rw", state: str = "MASTER", **over: Any) -> InstanceInfo:
    is_master = state == "MASTER"
    inst: InstanceInfo = {
        "name": name,
        "vrid": 51 if name == "rw" else 52,
        "state": state,
        "priority": 200 if name == "rw" else 150,
        "priority_reason": "configured" if name == "rw" else "Patroni role replica",
        "vips": ["10.20.31.100/32"] if name == "rw" else ["10.20.31.101/32"],
        "interface": "eth0",
        "held": is_master,
        "eligible": state in ("MASTER", "BACKUP"),
        "eligibility_reason": "/primary 200 x1 (rise 1)",
        "master": {
            "address": "10.20.31.11" if is_master else "10.20.31.12",
            "priority": 200 if is_master else 150,
            "is_self": is_master,
            "heard_at": None if is_master else NOW - 0.4,
        },
        "poll": {
            "endpoint": "/primary" if name == "rw" else "/replica",
            "verdict": "yes",
            "reason": "/primary 200",
            "cause": "ok",
            "at": NOW - 0.3,
            "latency": 0.0042,
            "polls": 1234,
            "errors": {"timeout": 2},
        },
        "last_takeover": 0.41 if is_master else None,
        "transitions": [
            transition(
                NOW - 100,
                "INIT",
                "BACKUP",
                "eligible (/primary 200); no master heard",
                kind="eligible",
            ),
            transition(
                NOW - 97, "BACKUP", "MASTER", "master down: no advert for 3.61s", kind="master_down"
            ),
        ]
        if is_master
        else [],
        "conflicts": [],
    }
    inst.update(over)  # type: ignore[typeddict-item]
    return inst


def backend(member: str, address: str, **over: Any) -> BackendInfo:
    b: BackendInfo = {
        "member": member,
        "address": address,
        "port": 5432,
        "state": "active",
        "healthy": True,
        "weight": 1,
        "lag": 2048,
        "last_probe_at": NOW - 0.5,
        "last_error": None,
        "reason": "/replica?lag=16MB 200 x2 (rise 2)",
    }
    b.update(over)  # type: ignore[typeddict-item]
    return b


def ro_info(**over: Any) -> RoInfo:
    ro: RoInfo = {
        "dataplane": "nftables",
        "dataplane_reason": "auto: no IPVS in this kernel",
        "forwarding_reason": "nat, one-armed: nftables DNAT plus masquerade",
        "directing": False,
        "port": 5432,
        "scheduler": "rr",
        "forwarding": "nat",
        "fallback_active": False,
        "reason": "2 replicas",
        "healthy": 2,
        "total": 2,
        "apply_errors": 0,
        "backends": [backend("node2", "10.20.31.12"), backend("node3", "10.20.31.13")],
    }
    ro.update(over)  # type: ignore[typeddict-item]
    return ro


def make_snapshot(*, ro: bool = True, rw_state: str = "MASTER") -> Snapshot:
    snap: Snapshot = {
        "schema": 1,
        "now": NOW,
        "pgvip": {
            "version": "0.1.0",
            "node": "node1",
            "pid": 4242,
            "started_at": NOW - 3600,
            "ready": True,
            "loop_stalls": 0,
            "loop_stall_max_s": 0.0,
        },
        "instances": {"rw": instance("rw", rw_state)},
        "patroni": {
            "url": "http://127.0.0.1:8008",
            "member": "node1",
            "role": "primary",
            "state": "running",
            "timeline": 3,
            "failsafe_active": None,
            "checked_at": NOW - 2.0,
        },
        "ro": None,
    }
    if ro:
        snap["instances"]["ro"] = instance("ro", "BACKUP")
        snap["ro"] = ro_info()
    return copy.deepcopy(snap)
