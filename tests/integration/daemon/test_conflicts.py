"""VIP conflicts seen by a real `pgvip run`: a host outside the cluster (c) that has the RW VIP
answers the ARP probe sent as the leader claims it, and the holder reports it in its log,
/status, `pgvip status` and /metrics; a normal switchover between pgvip nodes reports none."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.daemon.conftest import PGVIP, VIP, DaemonLab, wait_for, wait_holder
from tests.integration.daemon.test_status_daemon import get, metric

pytestmark = pytest.mark.integration


def conflict_lines(dlab: DaemonLab, host: str) -> list[dict[str, object]]:
    return [e for e in dlab.nodes[host].log_lines()
            if str(e.get("event", "")).startswith("VIP conflict")]  # fmt: skip


def test_a_rogue_host_with_the_vip_is_reported_by_the_holder(dlab: DaemonLab) -> None:
    dlab.net.ip("c", "addr", "add", f"{VIP}/32", "dev", "eth0")  # not a pgvip node
    rogue = dlab.net.mac("c")
    dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a")
    wait_holder(dlab, ["a", "c"])  # pgvip cannot take it off c: it reports it
    wait_for(lambda: bool(conflict_lines(dlab, "a")), timeout=5, what="a conflict log line")
    line = conflict_lines(dlab, "a")[0]
    assert (line["vip"], line["mac"], line["instance"]) == (VIP, rogue, "rw"), line
    snap = json.loads(get(dlab, "a", "/status")[1])
    (found,) = snap["instances"]["rw"]["conflicts"]
    assert (found["vip"], found["mac"], found["kind"]) == (VIP, rogue, "arp reply")
    text = get(dlab, "a", "/metrics")[1]
    assert metric(text, "pgvip_vip_conflicts_total", vrrp_instance="rw") >= 1
    shown = subprocess.run(["ip", "netns", "exec", dlab.net.ns("a"), PGVIP, "status"],
                           capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    assert f"CONFLICT: {rogue} claims {VIP}" in shown, shown
    # Reported, not fought: the holder's GARPs stay within its burst (garp_count 2).
    announced = metric(text, "pgvip_announcements_sent_total", kind="garp")
    assert announced <= 2, announced


def test_a_switchover_between_pgvip_nodes_is_no_conflict(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    b = dlab.start_standin("b", primary=503)
    dlab.start_pgvip("a")
    dlab.start_pgvip("b")
    wait_holder(dlab, ["a"])
    a.set_primary(503)
    b.set_primary(200)
    wait_holder(dlab, ["b"])
    a.set_primary(200)
    b.set_primary(503)
    wait_holder(dlab, ["a"])
    assert conflict_lines(dlab, "a") == [] and conflict_lines(dlab, "b") == []
