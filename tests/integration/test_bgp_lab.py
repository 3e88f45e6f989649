"""pgvip's L3 (BGP) mode against real components: the netns lab's etcd + Patroni +
PostgreSQL, two FRR routers that peer with every node, and a client that reaches the VIPs
only through the first router (pgvip.lab.bgp_fabric). The routers' forwarding tables are
sampled every 20 ms (pgvip.lab.route_sampler)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvip.lab import netns, processes
from pgvip.lab.bgp_fabric import Fabric, FabricBuilder, pgvip_bgp_document
from pgvip.lab.cluster import Lab
from pgvip.lab.layout import LabLayout
from pgvip.lab.route_sampler import RouteSampler
from pgvip.lab.toml_text import toml_text

from .conftest import LAB_UP_TIMEOUT, remove_stale_lab

pytestmark = pytest.mark.integration

PREFIX = os.environ.get("PGVIP_TEST_BGP_PREFIX", "pgvb")
SUBNET = os.environ.get("PGVIP_TEST_BGP_SUBNET", "10.20.46.0/24")
NODE = "select current_setting('pgvip.node', true)"  # the lab names each PostgreSQL
ROUTE_TIMEOUT = 15.0  # seconds; sessions come up in ~1 s, Patroni polls every 0.1 s


class BgpLab:
    def __init__(self, lab: Lab, builder: FabricBuilder, sampler: RouteSampler) -> None:
        self.lab = lab
        self.builder = builder
        self.f = builder.f
        self.sampler = sampler

    def ip(self, node: str) -> str:
        return str(self.lab.layout.node_ip(node))

    def replicas(self, leader: str) -> set[str]:
        return {self.ip(n) for n in self.lab.layout.node_names() if n != leader}

    def settle(self) -> str:
        """Wait for one leader, RW routed to it and RO to both replicas on every router."""
        self.lab.wait_ready(timeout=60, progress=lambda _m: None, vip=False)
        leader = self.lab.leader()
        assert leader is not None
        for r in self.f.router_names():
            assert (
                self.sampler.wait_for(r, self.f.rw_vip, {self.ip(leader)}, ROUTE_TIMEOUT)
                is not None
            ), (r, self.sampler.latest(r), self._logs())
            ro = self.sampler.wait_for(r, self.f.ro_vip, self.replicas(leader), ROUTE_TIMEOUT)
            assert ro is not None, (r, self.sampler.latest(r), self._logs())
        return leader

    def sql(self, vip: object, query: str, *, timeout: float = 5.0) -> str:
        env = {"PGPASSWORD": "postgres", "PGCONNECT_TIMEOUT": "2", "PATH": "/usr/bin:/bin"}
        argv = ["ip", "netns", "exec", self.f.client_ns, "psql", "-h", str(vip), "-U",
                "postgres", "-d", "postgres", "-Atc", query]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def speaker_pid(self, node: str) -> int:
        pid_of_pgvip = self.lab.pid(node, "pgvip")
        assert pid_of_pgvip is not None
        children = Path(f"/proc/{pid_of_pgvip}/task/{pid_of_pgvip}/children").read_text().split()
        for child in children:
            if Path(f"/proc/{child}/comm").read_text().strip() == "bird":
                return int(child)
        raise AssertionError(f"no bird child of pgvip {pid_of_pgvip} on {node}: {children}")

    def _logs(self) -> str:
        out = []
        for node in self.lab.layout.node_names():
            out.append(processes.tail(self.lab.log_path(node, "pgvip"), 8))
        return "\n".join(out)


@pytest.fixture(scope="module")
def bgp_lab() -> Iterator[BgpLab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    layout = LabLayout.create(prefix=PREFIX, subnet=SUBNET, nodes=3)
    remove_stale_lab(layout)
    lab = Lab(layout, pgvip=False)
    builder = FabricBuilder(Fabric(lab))
    try:
        lab.up(timeout=LAB_UP_TIMEOUT, progress=lambda msg: print(f"lab: {msg}"))
        builder.up()
        builder.start_pgvip()
        f = builder.f
        routers = {r: f.router_ns(r) for r in f.router_names()}
        with RouteSampler(routers, [f.rw_vip, f.ro_vip]) as sampler:
            yield BgpLab(lab, builder, sampler)
    finally:
        try:
            lab.down()
        finally:
            builder.down()
            assert not netns.routes_to(layout.routed_client_subnet)


def test_routes_follow_patroni_and_clients_reach_the_right_nodes(bgp_lab: BgpLab) -> None:
    leader = bgp_lab.settle()
    f = bgp_lab.f
    # Through the router only: the client has no L2 path to any node.
    assert bgp_lab.sql(f.rw_vip, "select pg_is_in_recovery()") == "f"
    assert bgp_lab.sql(f.rw_vip, NODE) == leader
    served = {bgp_lab.ip(bgp_lab.sql(f.ro_vip, NODE)) for _ in range(24)}
    # r1 hashes flows on L4 (fib_multipath_hash_policy 1): 24 connections from one client
    # reach both replicas unless the ECMP set is wrong (chance of one replica only: 2^-23).
    assert served == bgp_lab.replicas(leader), served
    assert {bgp_lab.sql(f.ro_vip, "select pg_is_in_recovery()") for _ in range(4)} == {"t"}
    for r in f.router_names():
        assert bgp_lab.builder.established(r) == {
            bgp_lab.ip(n) for n in bgp_lab.lab.layout.node_names()
        }
    # /status reads "MASTER" as "announced", and says how many sessions are up.
    curl = ["curl", "-sf", "http://127.0.0.1:8010/status"]
    status = json.loads(bgp_lab.lab.run(leader, curl, check=True, timeout=10).stdout)
    rw, ro = status["instances"]["rw"], status["instances"]["ro"]
    assert (rw["state"], rw["held"], rw["interface"]) == ("MASTER", True, "lo")
    assert rw["priority_reason"] == "bgp: 2 of 2 sessions established"
    assert ro["state"] == "FAULT" and "healthy replicas serve" in ro["eligibility_reason"]


def test_switchover_moves_the_rw_route_without_two_at_once(bgp_lab: BgpLab) -> None:
    leader = bgp_lab.settle()
    f, s = bgp_lab.f, bgp_lab.sampler
    candidate = sorted(n for n in bgp_lab.lab.layout.node_names() if n != leader)[0]
    t0 = time.monotonic()
    bgp_lab.lab.switchover(leader, candidate)
    for r in f.router_names():
        assert s.wait_for(r, f.rw_vip, {bgp_lab.ip(candidate)}, ROUTE_TIMEOUT) is not None, (
            bgp_lab._logs()
        )
    assert s.dual(f.rw_vip, since=t0 - 1.0) == []
    # The new leader leaves the RO set at once; the old one joins once it streams.
    for r in f.router_names():
        assert s.wait_for(r, f.ro_vip, bgp_lab.replicas(candidate), 30.0) is not None, s.latest(r)
    assert bgp_lab.sql(f.rw_vip, NODE) == candidate


def test_kill_9_of_pgvip_withdraws_its_routes_and_a_restart_brings_them_back(
    bgp_lab: BgpLab,
) -> None:
    leader = bgp_lab.settle()
    f, s = bgp_lab.f, bgp_lab.sampler
    bird = bgp_lab.speaker_pid(leader)
    bgp_lab.lab.kill(leader, "pgvip")
    # BIRD dies with pgvip (PR_SET_PDEATHSIG): its sessions close and the routers withdraw
    # at once, well inside the hold time (3 s).
    took = s.wait_for("r1", f.rw_vip, set(), 3.0)
    assert took is not None and took < 2.0, (took, s.latest("r1"))
    assert (
        not Path(f"/proc/{bird}").exists()
        or "Z" in Path(f"/proc/{bird}/stat").read_text().split()[2]
    )
    bgp_lab.lab.start(leader, "pgvip")
    assert s.wait_for("r1", f.rw_vip, {bgp_lab.ip(leader)}, ROUTE_TIMEOUT) is not None, (
        bgp_lab._logs()
    )


def test_a_killed_speaker_is_restarted_and_its_routes_return(bgp_lab: BgpLab) -> None:
    leader = bgp_lab.settle()
    f, s = bgp_lab.f, bgp_lab.sampler
    replica = sorted(bgp_lab.replicas(leader))[0]
    node = next(n for n in bgp_lab.lab.layout.node_names() if bgp_lab.ip(n) == replica)
    os.kill(bgp_lab.speaker_pid(node), signal.SIGKILL)
    assert s.wait_for("r1", f.ro_vip, bgp_lab.replicas(leader) - {replica}, 3.0) is not None
    assert s.wait_for("r1", f.ro_vip, bgp_lab.replicas(leader), ROUTE_TIMEOUT) is not None, (
        bgp_lab._logs()
    )
    log = bgp_lab.lab.log_path(node, "pgvip").read_text()
    assert "BGP speaker exited" in log


def test_patroni_stopped_on_a_replica_withdraws_its_ro_route(bgp_lab: BgpLab) -> None:
    leader = bgp_lab.settle()
    f, s = bgp_lab.f, bgp_lab.sampler
    node = sorted(n for n in bgp_lab.lab.layout.node_names() if n != leader)[0]
    bgp_lab.lab.stop(node, "patroni")
    try:
        left = bgp_lab.replicas(leader) - {bgp_lab.ip(node)}
        assert s.wait_for("r1", f.ro_vip, left, ROUTE_TIMEOUT) is not None, s.latest("r1")
        assert s.dual(f.rw_vip) == []
    finally:
        bgp_lab.lab.start(node, "patroni")


def test_a_speaker_that_cannot_start_is_a_clear_exit_2(bgp_lab: BgpLab, tmp_path: Path) -> None:
    # In the client namespace: no pgvip runs there to claim the instance or the status port.
    node = bgp_lab.lab.layout.node_names()[0]
    doc = pgvip_bgp_document(bgp_lab.f, node, binary="/nonexistent/bird",
                             runtime_dir=str(tmp_path))  # fmt: skip
    bad = tmp_path / "bad.toml"
    bad.write_text(toml_text(doc, header="# a speaker binary that does not exist"))
    argv = [str(bgp_lab.lab.venv_bin / "pgvip"), "run", "--config", str(bad)]
    proc = netns.run(netns.exec_argv(bgp_lab.f.client_ns, argv), check=False, timeout=30)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "bgp.binary /nonexistent/bird is not an executable" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
