"""What the status API serves: the `/status` snapshot schema (TypedDicts, mirrored by
docs/openapi.yaml), the bounded reason kinds used as metric labels, and the one-line summary
used for systemd's STATUS=.

The daemon builds a `Snapshot` from its state on every `GET /status`; this module imports
nothing beyond the standard library and the VRRP core's pure types, so the CLI and the
daemon can both use it cheaply.

Conventions of the snapshot:

* Times are wall-clock epoch seconds (float); `now` is when the snapshot was taken, so a
  reader computes ages as `now - at` without trusting its own clock.
* Durations are seconds (float); sizes are bytes (int).
* Keys are always present; a value that is not known (yet) is `null`, never missing. The only
  optional keys are `instances.ro` and, in `ro`, the whole object (`null` without an RO VIP).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from pgvip.vrrp.actions import TransitionKind

__all__ = [
    "REASON_KINDS",
    "SERVER_PREFIX",
    "SNAPSHOT_SCHEMA",
    "STATES",
    "BackendInfo",
    "DaemonInfo",
    "Instances",
    "InstanceInfo",
    "MasterSeen",
    "PatroniInfo",
    "PollInfo",
    "RoInfo",
    "Snapshot",
    "TransitionInfo",
    "reason_kind",
    "server_header",
    "status_line",
]

SNAPSHOT_SCHEMA = 1  # bumped on an incompatible change to the snapshot
SERVER_PREFIX = "pgvip/"  # every status API response carries `Server: pgvip/<version>`
STATES = ("INIT", "BACKUP", "MASTER", "FAULT")

# Metric labels must stay a small fixed set, so transitions are counted by their kind, which
# the VRRP state machine sets, never by their reason text (addresses and timings).
REASON_KINDS = tuple(kind.value for kind in TransitionKind)


def server_header(version: str) -> str:
    """The `Server` header value that identifies a pgvip status API."""
    return f"{SERVER_PREFIX}{version}"


# -- the /status snapshot -------------------------------------------------------------


class DaemonInfo(TypedDict):
    version: str
    node: str  # the host name (or Patroni member name) this daemon runs on
    pid: int
    started_at: float  # epoch seconds
    ready: bool  # the first reconcile has succeeded (systemd READY=1 was sent)
    loop_stalls: int  # event-loop wake-ups late by more than the advert interval
    loop_stall_max_s: float  # the latest of them, seconds


class MasterSeen(TypedDict):
    """Who this node believes is master of the instance, and when it last heard a peer."""

    address: str | None  # None: no master known
    priority: int | None  # 0: that master resigned
    is_self: bool
    heard_at: float | None  # epoch of the last advert from another router; None if never


class TransitionInfo(TypedDict):
    at: float  # epoch seconds
    from_state: str  # one of STATES
    to_state: str
    reason: str  # human text, e.g. "master down: no advert for 3.61s"
    reason_kind: str  # one of REASON_KINDS
    priority: int


class PollInfo(TypedDict):
    """The last answer of the Patroni poll that drives an instance's eligibility."""

    endpoint: str  # e.g. "/primary"
    verdict: str  # "yes", "no" or "unknown"
    reason: str  # e.g. "/primary 200", "connect refused: 127.0.0.1:8008"
    cause: str  # stable label: "ok", "http_503", "timeout", "refused", ...
    at: float | None  # epoch of the answer
    latency: float | None  # seconds
    polls: int
    errors: dict[str, int]  # failed polls (verdict unknown) by cause, since start


class ConflictInfo(TypedDict):
    """Another host claimed one of this instance's VIPs while this node held it."""

    vip: str
    mac: str  # the other host's Ethernet address
    kind: str  # "arp reply", "arp request" or "na"
    count: int  # claims seen from that MAC while held
    last_seen: float  # epoch seconds


class InstanceInfo(TypedDict):
    name: str  # "rw" or "ro"
    vrid: int
    state: str  # one of STATES
    priority: int  # the priority this node advertises now (effective)
    priority_reason: str  # "configured", or why it changed (e.g. "Patroni role replica")
    vips: list[str]  # CIDR form
    interface: str
    held: bool  # the VIPs are on this node's interface right now (netlink view)
    eligible: bool
    eligibility_reason: str  # e.g. "/primary 200 x1 (rise 1)"
    master: MasterSeen
    poll: PollInfo | None
    last_takeover: float | None  # seconds from "Patroni says leader" to "VIP held", last time
    transitions: list[TransitionInfo]  # oldest first
    conflicts: list[
        ConflictInfo
    ]  # seen in the last minute while held (pgvip.dataplane.conflict_watch)


class _RwInstance(TypedDict):
    rw: InstanceInfo


# total=False rather than NotRequired: with postponed annotations Python 3.11 cannot see
# NotRequired and would list "ro" as required.
class Instances(_RwInstance, total=False):
    ro: InstanceInfo  # absent when no RO VIP is configured


class PatroniInfo(TypedDict):
    """This node's Patroni, from its last `GET /patroni`."""

    url: str
    member: str | None
    role: str | None  # "primary", "replica", "standby_leader", ...
    state: str | None  # "running", "starting", "stopped", ...
    timeline: int | None
    failsafe_active: bool | None
    checked_at: float | None  # epoch of the last successful /patroni read


class BackendInfo(TypedDict):
    member: str
    address: str | None
    port: int | None
    state: str  # "active", "draining", "down", "excluded" or "leader"
    healthy: bool
    weight: int
    lag: int | None  # bytes
    last_probe_at: float | None  # epoch
    last_error: str | None  # the last failed probe's reason; None if the last probe was good
    reason: str  # why the member is in this state


class RoInfo(TypedDict):
    dataplane: str | None  # "nftables" or "ipvs"; None until chosen
    dataplane_reason: str  # e.g. "auto: no IPVS in this kernel"
    forwarding_reason: str  # what the forwarding method needs and what it costs
    directing: bool  # this node holds the RO VIP and programs the balancer
    port: int
    scheduler: str
    forwarding: str
    fallback_active: bool  # no healthy replica: serving from the primary
    reason: str  # the backend set's summary
    healthy: int
    total: int
    apply_errors: int
    backends: list[BackendInfo]


class Snapshot(TypedDict):
    schema: int  # SNAPSHOT_SCHEMA
    now: float  # epoch seconds when the snapshot was taken
    pgvip: DaemonInfo
    instances: Instances
    patroni: PatroniInfo
    ro: RoInfo | None


def status_line(snapshot: Mapping[str, Any]) -> str:
    """A one-line summary for systemd's STATUS=, e.g. "rw MASTER, ro BACKUP, 2/2 backends"."""
    parts: list[str] = []
    instances = snapshot.get("instances") or {}
    for name in ("rw", "ro"):
        inst = instances.get(name)
        if not inst:
            continue
        text = f"{name} {inst.get('state', '?')}"
        held = inst.get("held")
        # The two ways the VIP can disagree with the election are what an operator must see.
        if inst.get("state") == "MASTER" and held is False:
            text += " (VIP missing)"
        elif inst.get("state") != "MASTER" and held:
            text += " (VIP still here)"
        parts.append(text)
    ro = snapshot.get("ro")
    if ro:
        parts.append(f"{ro.get('healthy', 0)}/{ro.get('total', 0)} backends")
    if not (snapshot.get("pgvip") or {}).get("ready", True):
        parts.append("starting")
    return ", ".join(parts) if parts else "no instance"
