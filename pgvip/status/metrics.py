"""Prometheus metrics: a `Metrics` object over a private registry, with one method per thing
the daemon observes (a transition, a Patroni poll, a VRRP packet, ...).

Import this module only when the status API is enabled: prometheus_client costs memory.
Every label value is bounded: instance names, states and reason kinds come from fixed sets,
and free-form labels (poll causes, VRRP reject reasons) are limited to a few short
identifiers, with "other" beyond that, so a bug or a hostile peer cannot explode the series.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

from pgvip import __version__
from pgvip.status import REASON_KINDS, STATES

__all__ = [
    "INSTANCES",
    "LAG_BUCKETS",
    "POLL_BUCKETS",
    "TAKEOVER_BUCKETS",
    "VRRP_DROP_REASONS",
    "Metrics",
]

INSTANCES = ("rw", "ro")
# The label is not called "instance": Prometheus sets that label on every scraped series and
# would rename ours to "exported_instance".
INSTANCE_LABEL = "vrrp_instance"
ANNOUNCE_KINDS = ("garp", "na")
# Why a received VRRP packet was dropped: the codec's VrrpPacketError reasons; the socket's
# ("overflow": lost unread on a full receive buffer, "own", "not_peer"); the channel's
# ("unknown_vrid", "address_mismatch"). Each series exists from the start at 0, so
# `rate(...) > 0` alerts work without a first drop. docs/deployment.md explains each.
VRRP_DROP_REASONS = (
    "truncated",
    "bad_ip_header",
    "bad_protocol",
    "bad_ttl",
    "bad_version",
    "bad_type",
    "bad_count",
    "bad_family",
    "bad_checksum",
    "bad_vrid",
    "bad_interval",
    "overflow",
    "own",
    "not_peer",
    "unknown_vrid",
    "address_mismatch",
)
# Patroni answers a local health GET in milliseconds; its timeout default is 2 s.
POLL_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# From "Patroni says leader" to "VIP held": Skew_Time plus GARP, or a Master_Down_Interval.
TAKEOVER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)
# How late the event loop wakes: a few ms idle, up to seconds on a starved host.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Healthy outcomes of a poll: a definite yes or no from Patroni is not an error.
_NOT_ERRORS = frozenset({"ok", "http_503"})
_LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class _Bounded:
    """Maps a label value into a bounded set: known values, then up to `spare` new short
    identifiers, then "other"."""

    def __init__(self, known: Iterable[str], spare: int = 0) -> None:
        self._allowed = set(known)
        self._spare = spare

    def __call__(self, value: object) -> str:
        text = str(getattr(value, "name", value))  # accepts enums such as vrrp.State
        if text in self._allowed:
            return text
        low = text.lower()
        if low in self._allowed:
            return low
        if self._spare > 0 and _LABEL_VALUE.match(low):
            self._spare -= 1
            self._allowed.add(low)
            return low
        return "other"


class Metrics:
    """The daemon's metrics. Every method is cheap and never raises on odd input."""

    def __init__(self, instances: Iterable[str] = ("rw",)) -> None:
        """`instances`: the VRRP instances configured here; their series exist from the start
        (state INIT, VIP not held), so an alert on "no holder" sees every node at once."""
        # The *_created series double every counter and histogram and say only when the
        # daemon started; the switch is process-wide, which is fine in the daemon.
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._instance = _Bounded(INSTANCES)
        self._state = _Bounded(STATES)
        self._kind = _Bounded(REASON_KINDS)
        self._cause = _Bounded(("ok", "http_503", "timeout", "refused", "tls", "auth"), spare=12)
        self._reject = _Bounded(VRRP_DROP_REASONS, spare=4)
        self._announce = _Bounded(ANNOUNCE_KINDS)
        self._states: dict[str, str] = {}
        inst = INSTANCE_LABEL

        info = Gauge("pgvip_info", "pgvip build information (always 1).", ["version"], registry=r)
        info.labels(__version__).set(1)
        self._state_g = Gauge(
            "pgvip_vrrp_state",
            "1 for the VRRP state the instance is in, 0 for the others.",
            [inst, "state"],
            registry=r,
        )
        self._held_g = Gauge(
            "pgvip_vip_held",
            "1 while this node has the instance's VIPs on its interface. Alert when the sum "
            "over the cluster is not 1.",
            [inst],
            registry=r,
        )
        self._priority_g = Gauge(
            "pgvip_vrrp_priority", "The priority this node advertises now.", [inst], registry=r
        )
        self._transitions = Counter(
            "pgvip_vrrp_transitions",
            "VRRP state transitions, by kind of reason.",
            [inst, "from_state", "to_state", "reason_kind"],
            registry=r,
        )
        self._poll_h = Histogram(
            "pgvip_patroni_poll_duration_seconds",
            "Time Patroni took to answer a health poll (failed polls included).",
            [inst],
            buckets=POLL_BUCKETS,
            registry=r,
        )
        self._polls = Counter(
            "pgvip_patroni_polls", "Patroni polls by outcome.", [inst, "cause"], registry=r
        )
        self._poll_errors = Counter(
            "pgvip_patroni_poll_errors",
            "Patroni polls that got no usable answer (timeout, refused, ...), by cause.",
            [inst, "cause"],
            registry=r,
        )
        self._sent = Counter("pgvip_vrrp_adverts_sent", "VRRP adverts sent.", registry=r)
        self._received = Counter(
            "pgvip_vrrp_adverts_received",
            "Valid VRRP adverts received for this node's VRIDs.",
            registry=r,
        )
        self._rejected = Counter(
            "pgvip_vrrp_packets_rejected",
            "VRRP packets dropped, by reason: invalid (bad_*, truncated), not for this node "
            "(unknown_vrid, own, not_peer), misconfigured (address_mismatch) or lost unread "
            "on a full receive buffer (overflow).",
            ["reason"],
            registry=r,
        )
        self._announced = Counter(
            "pgvip_announcements_sent",
            "Gratuitous ARPs (garp) and unsolicited neighbour advertisements (na) sent.",
            ["kind"],
            registry=r,
        )
        self._conflicts = Counter(
            "pgvip_vip_conflicts",
            "Claims of a VIP this node held from another host's MAC (ARP or neighbour "
            "advertisement). Alert on any increase: someone else has the address.",
            [inst],
            registry=r,
        )
        self._healthy_g = Gauge(
            "pgvip_ro_backends_healthy", "RO backends healthy and serving.", registry=r
        )
        self._total_g = Gauge("pgvip_ro_backends", "RO backends known (any state).", registry=r)
        self._dp_errors = Counter(
            "pgvip_ro_dataplane_apply_errors",
            "Failures to program the RO load balancer.",
            registry=r,
        )
        self._takeover_h = Histogram(
            "pgvip_takeover_seconds",
            'Time from "Patroni says leader" to "VIP held" on this node.',
            buckets=TAKEOVER_BUCKETS,
            registry=r,
        )
        self._lag_h = Histogram(
            "pgvip_event_loop_lag_seconds",
            "How late the event loop woke a 50 ms timer (every wake-up): adverts, polls and "
            "checks are late by as much.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._stalls = Counter(
            "pgvip_event_loop_stalls",
            "Wake-ups late by more than the VRRP advert interval (an advert went out late). "
            "Alert on any increase near a VIP overlap or a failed poll: CPU starvation.",
            registry=r,
        )
        ProcessCollector(registry=r)  # RSS and CPU: the daemon has a memory budget

        for kind in ANNOUNCE_KINDS:
            self._announced.labels(kind)
        for reason in VRRP_DROP_REASONS:
            self._rejected.labels(reason)
        for name in instances:
            self.state(name, "INIT")
            self.vip_held(name, False)
            self._conflicts.labels(vrrp_instance=self._instance(name))

    # -- VRRP ---------------------------------------------------------------------------

    def state(self, instance: str, state: object) -> None:
        """Set the instance's current state (a vrrp State or its name)."""
        name = self._instance(instance)
        now = self._state(state)
        self._states[name] = now
        for s in STATES:
            self._state_g.labels(name, s).set(1 if s == now else 0)

    def transition(
        self, instance: str, from_state: object, to_state: object, reason_kind: str
    ) -> None:
        """Count a transition and make `to_state` the current state. `reason_kind` is
        the transition's `TransitionKind` value, never the reason text."""
        name = self._instance(instance)
        self._transitions.labels(
            name, self._state(from_state), self._state(to_state), self._kind(reason_kind)
        ).inc()
        self.state(name, to_state)

    def vip_held(self, instance: str, held: bool) -> None:
        self._held_g.labels(self._instance(instance)).set(1 if held else 0)

    def priority(self, instance: str, priority: int) -> None:
        self._priority_g.labels(self._instance(instance)).set(priority)

    def vrrp_sent(self, n: int = 1) -> None:
        self._sent.inc(n)

    def vrrp_received(self) -> None:
        self._received.inc()

    def vrrp_rejected(self, reason: str, n: int = 1) -> None:
        """`reason` is one of VRRP_DROP_REASONS ("bad_ttl", "unknown_vrid", ...)."""
        self._rejected.labels(self._reject(reason)).inc(n)

    def vip_conflict(self, instance: str) -> None:
        self._conflicts.labels(vrrp_instance=self._instance(instance)).inc()

    def announced(self, kind: str, n: int = 1) -> None:
        """`kind` is "garp" (IPv4) or "na" (IPv6)."""
        self._announced.labels(self._announce(kind)).inc(n)

    def takeover(self, seconds: float) -> None:
        """Observe the time from "Patroni says leader" to "VIP held"."""
        self._takeover_h.observe(max(0.0, seconds))

    # -- Patroni ------------------------------------------------------------------------

    def poll(self, instance: str, latency: float, cause: str) -> None:
        """Record one poll: `latency` in seconds, `cause` is Observation.cause."""
        name = self._instance(instance)
        label = self._cause(cause)
        self._poll_h.labels(name).observe(max(0.0, latency))
        self._polls.labels(name, label).inc()
        if label not in _NOT_ERRORS:
            self._poll_errors.labels(name, label).inc()

    # -- RO -----------------------------------------------------------------------------

    def backends(self, healthy: int, total: int) -> None:
        self._healthy_g.set(healthy)
        self._total_g.set(total)

    def dataplane_error(self) -> None:
        self._dp_errors.inc()

    # -- the process ----------------------------------------------------------------------

    def loop_lag(self, late_s: float, stalled: bool) -> None:
        self._lag_h.observe(max(0.0, late_s))
        if stalled:
            self._stalls.inc()

    # -- exposition ---------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def aiohttp_handler(self) -> Any:
        """An aiohttp handler serving this registry (text or OpenMetrics, by Accept)."""
        from prometheus_client.aiohttp import make_aiohttp_handler

        return make_aiohttp_handler(self.registry)
