"""pgvip.status.metrics: what the daemon's calls produce, parsed back with prometheus_client's
own parser, and that label values stay bounded whatever the input."""

from __future__ import annotations

import enum

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgvip.status.metrics import INSTANCE_LABEL, VRRP_DROP_REASONS, Metrics
from pgvip.vrrp.instance import State


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the rendered text."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, tuple(sorted(labels.items()))))


def label_values(m: Metrics, name: str, label: str) -> set[str]:
    return {dict(k[1])[label] for k in samples(m) if k[0] == name and label in dict(k[1])}


def test_configured_instances_exist_from_the_start() -> None:
    m = Metrics(("rw", "ro"))
    for inst in ("rw", "ro"):
        assert value(m, "pgvip_vip_held", vrrp_instance=inst) == 0
        assert value(m, "pgvip_vrrp_state", vrrp_instance=inst, state="INIT") == 1
        assert value(m, "pgvip_vrrp_state", vrrp_instance=inst, state="MASTER") == 0
    assert value(m, "pgvip_info", version=__import__("pgvip").__version__) == 1


def test_unconfigured_ro_has_no_series() -> None:
    # A node without an RO VIP must not count as "RO VIP not held" in a cluster-wide alert.
    m = Metrics(("rw",))
    assert label_values(m, "pgvip_vip_held", INSTANCE_LABEL) == {"rw"}


def test_transition_counts_and_moves_the_one_hot_state() -> None:
    m = Metrics(("rw",))
    m.transition("rw", State.INIT, State.BACKUP, "eligible")
    m.transition("rw", "BACKUP", "MASTER", "master_down")
    m.transition("rw", "BACKUP", "MASTER", "master_down")
    key = {"vrrp_instance": "rw", "from_state": "BACKUP", "to_state": "MASTER"}
    assert value(m, "pgvip_vrrp_transitions_total", **key, reason_kind="master_down") == 2
    assert (
        value(
            m,
            "pgvip_vrrp_transitions_total",
            vrrp_instance="rw",
            from_state="INIT",
            to_state="BACKUP",
            reason_kind="eligible",
        )
        == 1
    )
    states = {
        s: value(m, "pgvip_vrrp_state", vrrp_instance="rw", state=s)
        for s in ("INIT", "BACKUP", "MASTER", "FAULT")
    }
    assert states == {"INIT": 0, "BACKUP": 0, "MASTER": 1, "FAULT": 0}


def test_free_text_reason_becomes_other() -> None:
    m = Metrics(("rw",))
    m.transition("rw", "BACKUP", "MASTER", "master down: no advert for 3.61s")
    assert label_values(m, "pgvip_vrrp_transitions_total", "reason_kind") == {"other"}


def test_vip_held_and_priority() -> None:
    m = Metrics(("rw",))
    m.vip_held("rw", True)
    m.priority("rw", 200)
    assert value(m, "pgvip_vip_held", vrrp_instance="rw") == 1
    assert value(m, "pgvip_vrrp_priority", vrrp_instance="rw") == 200
    m.vip_held("rw", False)
    assert value(m, "pgvip_vip_held", vrrp_instance="rw") == 0


def test_poll_latency_histogram_and_errors_by_cause() -> None:
    m = Metrics(("rw",))
    m.poll("rw", 0.004, "ok")
    m.poll("rw", 0.003, "http_503")
    m.poll("rw", 2.0, "timeout")
    m.poll("rw", 0.001, "refused")
    assert value(m, "pgvip_patroni_poll_duration_seconds_count", vrrp_instance="rw") == 4
    bucket = value(m, "pgvip_patroni_poll_duration_seconds_bucket", vrrp_instance="rw", le="0.005")
    assert bucket == 3
    assert value(m, "pgvip_patroni_polls_total", vrrp_instance="rw", cause="ok") == 1
    # A definite answer (200 or 503) is not an error; timeout and refused are.
    assert label_values(m, "pgvip_patroni_poll_errors_total", "cause") == {"timeout", "refused"}


def test_vrrp_packet_counters() -> None:
    m = Metrics()
    m.vrrp_sent()
    m.vrrp_sent(3)
    m.vrrp_received()
    m.vrrp_rejected("bad_ttl")
    m.vrrp_rejected("bad_ttl")
    m.vrrp_rejected("bad_checksum")
    assert value(m, "pgvip_vrrp_adverts_sent_total") == 4
    assert value(m, "pgvip_vrrp_adverts_received_total") == 1
    assert value(m, "pgvip_vrrp_packets_rejected_total", reason="bad_ttl") == 2
    assert value(m, "pgvip_vrrp_packets_rejected_total", reason="bad_checksum") == 1


def test_reject_reasons_are_bounded() -> None:
    """A peer (or a bug) producing endless new reasons cannot create endless series."""
    m = Metrics()
    for i in range(500):
        m.vrrp_rejected(f"weird_{i}")
    m.vrrp_rejected("Not An Identifier!")
    reasons = label_values(m, "pgvip_vrrp_packets_rejected_total", "reason")
    assert len(reasons) <= len(VRRP_DROP_REASONS) + 4 + 1  # known, spare, other
    assert "other" in reasons
    total = sum(v for (n, _), v in samples(m).items() if n == "pgvip_vrrp_packets_rejected_total")
    assert total == 501  # nothing is lost, only lumped together


def test_unknown_instance_and_state_are_lumped() -> None:
    m = Metrics(("rw",))
    m.vip_held("x" * 100, True)
    m.transition("rw", "SOMETHING", "MASTER", "preempt")
    assert label_values(m, "pgvip_vip_held", INSTANCE_LABEL) == {"rw", "other"}
    assert label_values(m, "pgvip_vrrp_transitions_total", "from_state") == {"other"}


def test_enum_values_are_accepted_by_name() -> None:
    class Kind(enum.Enum):
        garp = "g"

    m = Metrics()
    m.announced(Kind.garp, 3)  # type: ignore[arg-type]
    m.announced("na", 2)
    assert value(m, "pgvip_announcements_sent_total", kind="garp") == 3
    assert value(m, "pgvip_announcements_sent_total", kind="na") == 2


def test_backends_dataplane_errors_and_takeover() -> None:
    m = Metrics(("rw", "ro"))
    m.backends(1, 3)
    m.dataplane_error()
    m.takeover(0.42)
    m.takeover(-1.0)  # a clock step must not make a negative observation
    assert value(m, "pgvip_ro_backends_healthy") == 1
    assert value(m, "pgvip_ro_backends") == 3
    assert value(m, "pgvip_ro_dataplane_apply_errors_total") == 1
    assert value(m, "pgvip_takeover_seconds_count") == 2
    assert value(m, "pgvip_takeover_seconds_bucket", le="0.5") == 2
    assert value(m, "pgvip_takeover_seconds_bucket", le="0.05") == 1


def test_no_created_series_and_process_metrics_present() -> None:
    names = {k[0] for k in samples(Metrics())}
    assert not any(n.endswith("_created") for n in names)
    assert "process_resident_memory_bytes" in names


@pytest.mark.parametrize("n", [1, 2])
def test_two_metrics_objects_do_not_share_state(n: int) -> None:
    # Each Metrics has a private registry, not prometheus_client's global one.
    a, b = Metrics(), Metrics()
    for _ in range(n):
        a.vrrp_sent()
    assert value(a, "pgvip_vrrp_adverts_sent_total") == n
    assert value(b, "pgvip_vrrp_adverts_sent_total") == 0
