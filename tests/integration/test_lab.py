"""The netns lab end to end: a real Patroni cluster, the fault helpers, preflight refusals, and a
`down` that leaves nothing behind (also after `lab up` was killed with SIGKILL mid-flight).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgvip.lab import netns, processes
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import LabLayout
from pgvip.lab.preflight import candidate_namespaces
from pgvip.lab.processes import ProcessId
from tests.integration.conftest import remove_stale_lab

pytestmark = pytest.mark.integration

PGVIP = str(Path(sys.executable).parent / "pgvip")
# The small lab used to test `down`: its own prefix and subnet, next to the session lab.
DOWN_PREFIX = os.environ.get("PGVIP_TEST_DOWN_PREFIX", "pgvd")
DOWN_SUBNET = os.environ.get("PGVIP_TEST_DOWN_SUBNET", "10.20.32.0/24")
# Never used by a lab: preflight refusals must not create anything with it.
REFUSED_PREFIX = "pgvx"
REFUSED_SUBNET = "10.20.33.0/24"


def cli(
    *args: str, timeout: float = 120, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [PGVIP, "lab", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def psql(lab: Lab, host: ipaddress.IPv4Address | str, sql: str) -> subprocess.CompletedProcess[str]:
    conninfo = f"host={host} user=postgres password=postgres dbname=postgres connect_timeout=2"
    return lab.run(
        "client",
        [str(lab.pg_bin / "psql"), "-X", "-At", conninfo, "-c", sql],
        timeout=15,
        env=processes.CLEAN_ENV,
    )


def wait_for(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def replicas(lab: Lab) -> list[str]:
    leader = lab.leader()
    assert leader is not None
    return [n for n in lab.layout.node_names() if n != leader]


def lab_processes(layout: LabLayout) -> list[ProcessId]:
    """Every process of a lab: recorded in its state file, and inside its namespaces."""
    found: list[ProcessId] = []
    if layout.state_file.exists():
        doc = json.loads(layout.state_file.read_text())
        found += [ProcessId(p["pid"], p["start_time"]) for p in doc["processes"].values()]
    for ns in candidate_namespaces(layout):
        for pid in netns.namespace_pids(ns):
            proc = processes.identify(pid)
            if proc is not None:
                found.append(proc)
    return found


def assert_nothing_left(layout: LabLayout, procs: list[ProcessId]) -> None:
    names = candidate_namespaces(layout)
    assert [ns for ns in netns.list_namespaces() if ns in names] == []
    assert [m for m in netns.netns_mounts() if Path(m).name in names] == []
    assert netns.routes_to(layout.subnet) == []
    assert not netns.has_unreachable_route(layout.subnet)
    assert [p.pid for p in procs if processes.is_alive(p)] == []
    assert not layout.state_file.exists()
    for node in layout.node_names():
        assert not layout.data_dir(node).exists()


# -- the session lab ---------------------------------------------------------


def test_up_gives_one_leader_and_streaming_replicas(lab_ready: Lab) -> None:
    members = lab_ready.members()
    roles = sorted((m["role"], m["state"]) for m in members)
    assert roles == [("leader", "running"), ("replica", "streaming"), ("replica", "streaming")]
    assert sorted(m["name"] for m in members) == ["p1", "p2", "p3"]
    status = lab_ready.status()
    assert status["phase"] == "ready"
    assert all(status["namespaces"].values())
    assert all(p["alive"] for p in status["processes"].values()), status["processes"]
    assert Path(status["log_dir"]).is_dir()


def test_sql_from_client_namespace(lab_ready: Lab) -> None:
    p2 = lab_ready.layout.node_ip("p2")
    out = psql(lab_ready, p2, "select 1")
    assert (out.returncode, out.stdout.strip()) == (0, "1"), out.stderr
    leader = lab_ready.leader()
    assert leader is not None
    leader_ip = lab_ready.layout.node_ip(leader)
    # The spec's form: psql -h ... -U postgres with PGPASSWORD.
    env = {**processes.CLEAN_ENV, "PGPASSWORD": "postgres"}
    out = lab_ready.run(
        "client",
        [str(lab_ready.pg_bin / "psql"), "-X", "-At", "-h", str(leader_ip), "-U", "postgres", "-c",
         "select pg_is_in_recovery()"],
        timeout=15,
        env=env,
    )  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "f"), out.stderr
    # A wrong password is refused: md5 auth really applies to the lab subnet.
    bad = f"host={p2} user=postgres password=wrong dbname=postgres connect_timeout=2"
    out = lab_ready.run(
        "client", [str(lab_ready.pg_bin / "psql"), "-X", bad, "-c", "select 1"], timeout=15, env=env
    )
    assert out.returncode != 0 and "password authentication failed" in out.stderr


def test_rw_vip_is_on_the_leader(lab_ready: Lab) -> None:
    if not lab_ready.pgvip:
        pytest.skip("the session lab runs without pgvip (PGVIP_TEST_PGVIP=1 turns it on)")
    assert lab_ready.status()["vip_holders"]["rw"] == [lab_ready.leader()]
    out = psql(lab_ready, lab_ready.layout.rw_vip, "select pg_is_in_recovery()")
    assert out.stdout.strip() == "f", out.stderr


def test_root_namespace_is_guarded(lab: Lab) -> None:
    subnet = lab.layout.subnet
    assert netns.has_unreachable_route(subnet)
    assert not any(addr.ip in subnet for _, addr in netns.root_addresses())
    # The kernel refuses to route to the lab from the root namespace (nothing is sent).
    out = subprocess.run(
        ["ip", "route", "get", str(lab.layout.node_ip("p1"))], capture_output=True, text=True
    )
    assert out.returncode != 0 and "no route to host" in out.stderr.lower()


def test_switchover_with_curl_from_client(lab_ready: Lab) -> None:
    leader = lab_ready.leader()
    candidate = replicas(lab_ready)[0]
    body = json.dumps({"leader": leader, "candidate": candidate})
    url = f"{lab_ready.layout.patroni_url(str(leader))}/switchover"
    out = lab_ready.run("client", ["curl", "-s", "--noproxy", "*", "-XPOST", "-d", body, url],
                        timeout=60)  # fmt: skip
    assert out.returncode == 0 and "Successfully switched over" in out.stdout, out.stdout
    wait_for(f"{candidate} to lead", lambda: lab_ready.leader() == candidate, 30)
    lab_ready.wait_ready(timeout=60, progress=lambda _m: None)


def test_switchover_method_and_its_refusal(lab_ready: Lab) -> None:
    leader = lab_ready.leader()
    assert leader is not None
    candidate = replicas(lab_ready)[-1]
    with pytest.raises(LabError, match="refused: HTTP 412"):
        lab_ready.switchover(candidate, leader)  # `candidate` is not the leader
    lab_ready.switchover(leader, candidate)
    wait_for(f"{candidate} to lead", lambda: lab_ready.leader() == candidate, 30)


def test_kill_patroni_and_postgres_then_reset(lab_ready: Lab) -> None:
    node = replicas(lab_ready)[0]
    prefix = lab_ready.layout.prefix
    old = {what: lab_ready.pid(node, what) for what in ("patroni", "postgres")}
    assert None not in old.values()
    for what in ("patroni", "postgres"):
        out = cli("kill", "--prefix", prefix, node, what)
        assert out.returncode == 0 and f"killed {what} on {node}" in out.stdout, out.stderr
        assert lab_ready.pid(node, what) is None
    out = psql(lab_ready, lab_ready.layout.node_ip(node), "select 1")
    assert out.returncode != 0
    again = cli("kill", "--prefix", prefix, node, "patroni")
    assert again.returncode == 0 and "is not running" in again.stdout
    lab_ready.reset(timeout=60)
    new = {what: lab_ready.pid(node, what) for what in ("patroni", "postgres")}
    assert None not in new.values() and new["patroni"] != old["patroni"]
    out = psql(lab_ready, lab_ready.layout.node_ip(node), "select pg_is_in_recovery()")
    assert out.stdout.strip() == "t", out.stderr


def test_kill_leader_fails_over_and_reset_rejoins_it(lab_ready: Lab) -> None:
    old_leader = lab_ready.leader()
    assert old_leader is not None
    lab_ready.kill(old_leader, "patroni")
    lab_ready.kill(old_leader, "postgres")
    # Patroni's ttl is 20 s: the leader key expires, then a replica takes over.
    wait_for("a new leader", lambda: lab_ready.leader() not in (None, old_leader), 45)
    lab_ready.reset(timeout=60)
    member = {m["name"]: m for m in lab_ready.members()}[old_leader]
    assert (member["role"], member["state"]) == ("replica", "streaming")


def test_wait_ready_names_a_dead_daemon_and_quotes_its_log(lab_ready: Lab) -> None:
    node = replicas(lab_ready)[0]
    lab_ready.kill(node, "patroni")
    with pytest.raises(LabError) as err:
        lab_ready.wait_ready(timeout=5, progress=lambda _m: None)
    text = str(err.value)
    assert f"patroni on {node} is not running" in text
    assert f"last lines of {lab_ready.log_path(node, 'patroni')}" in text


def test_partition_and_heal(lab_ready: Lab) -> None:
    node = replicas(lab_ready)[0]
    prefix = lab_ready.layout.prefix
    ip = lab_ready.layout.node_ip(node)
    out = cli("partition", "--prefix", prefix, node)
    assert out.returncode == 0, out.stderr
    assert lab_ready.status()["partitioned"] == [node]
    assert psql(lab_ready, ip, "select 1").returncode != 0
    ping = lab_ready.run("client", ["ping", "-c", "1", "-W", "1", str(ip)], timeout=10)
    assert ping.returncode != 0
    out = cli("heal", "--prefix", prefix, node)
    assert out.returncode == 0, out.stderr
    assert lab_ready.status()["partitioned"] == []
    wait_for(f"{node} to answer SQL", lambda: psql(lab_ready, ip, "select 1").returncode == 0, 15)


def test_cli_status_and_exec(lab_ready: Lab) -> None:
    prefix = lab_ready.layout.prefix
    out = cli("status", "--prefix", prefix)
    assert out.returncode == 0, out.stderr
    assert str(lab_ready.layout.log_dir) in out.stdout
    assert "leader" in out.stdout and "streaming" in out.stdout
    doc = json.loads(cli("status", "--prefix", prefix, "--json").stdout)
    assert doc["nodes"] == ["p1", "p2", "p3"] and doc["members_error"] is None
    out = cli(
        "exec", "--prefix", prefix, "p2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"
    )
    assert out.returncode == 0 and f"{lab_ready.layout.node_ip('p2')}/24" in out.stdout
    out = cli("exec", "--prefix", prefix, "p2", "--", "sh", "-c", "exit 7")
    assert out.returncode == 7
    out = cli("exec", "--prefix", prefix, "p9", "--", "true")
    assert out.returncode == 2 and "unknown host 'p9'" in out.stderr


# -- preflight refusals through the CLI -------------------------------------


def assert_refused(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    for needle in needles:
        assert needle in out.stderr, out.stderr
    assert not Path("/var/lib/pgvip-lab", REFUSED_PREFIX, "state.json").exists()
    assert [ns for ns in netns.list_namespaces() if ns.startswith(f"{REFUSED_PREFIX}-")] == []


@pytest.mark.parametrize("nodes", ["1", "6"])
def test_refuses_node_count_out_of_range(nodes: str) -> None:
    out = cli("up", "--prefix", REFUSED_PREFIX, "--subnet", REFUSED_SUBNET, "--nodes", nodes)
    assert_refused(out, "--nodes must be 2 to 5")


@pytest.mark.parametrize("subnet", ["10.20.33.0/23", "10.20.33.7/24", "banana", "fe80::/64"])
def test_refuses_bad_subnet(subnet: str) -> None:
    out = cli("up", "--prefix", REFUSED_PREFIX, "--subnet", subnet)
    assert_refused(out, "--subnet")


def root_address_subnets() -> list[str]:
    """/24s that hold an address of the root namespace (lo's 127.0.0.1 at least)."""
    found = {"127.0.0.0/24"}
    for _, addr in netns.root_addresses():
        if not addr.ip.is_loopback:
            found.add(str(ipaddress.IPv4Network(f"{addr.ip}/24", strict=False)))
    return sorted(found)


@pytest.mark.parametrize("subnet", root_address_subnets())
def test_refuses_subnet_colliding_with_root_namespace(subnet: str) -> None:
    out = cli("up", "--prefix", REFUSED_PREFIX, "--subnet", subnet)
    assert_refused(out, f"subnet {subnet} collides with the root namespace")


def test_refuses_existing_prefix_and_taken_subnet(lab: Lab) -> None:
    out = cli("up", "--prefix", lab.layout.prefix, "--subnet", REFUSED_SUBNET)
    assert out.returncode == 2 and "already exists" in out.stderr, out.stderr
    # Another prefix on the session lab's subnet hits that lab's unreachable guard route.
    out = cli("up", "--prefix", REFUSED_PREFIX, "--subnet", str(lab.layout.subnet))
    assert_refused(out, "collides", f"unreachable {lab.layout.subnet}")


def test_refuses_missing_binaries() -> None:
    out = cli("up", "--prefix", REFUSED_PREFIX, "--subnet", REFUSED_SUBNET,
              "--pg-bin", "/nonexistent/pg/bin")  # fmt: skip
    assert_refused(out, "/nonexistent/pg/bin/postgres", "sudo scripts/setup.sh")


@pytest.mark.parametrize("command", [["up"], ["down"], ["status"], ["kill", "p1", "patroni"]])
def test_refuses_non_root(command: list[str]) -> None:
    out = cli(*command, "--prefix", REFUSED_PREFIX, user="nobody")
    assert_refused(out, "needs root")
    assert len(out.stderr.strip().splitlines()) == 1


# -- down, on a small lab of its own -----------------------------------------


@pytest.fixture
def down_layout() -> Iterator[LabLayout]:
    layout = LabLayout.create(prefix=DOWN_PREFIX, subnet=DOWN_SUBNET, nodes=2)
    remove_stale_lab(layout)
    try:
        yield layout
    finally:
        cli("down", "--prefix", DOWN_PREFIX)


def test_down_leaves_nothing_and_spares_the_other_lab(lab: Lab, down_layout: LabLayout) -> None:
    small = Lab(down_layout, pgvip=False)
    small.up(timeout=60, progress=lambda _m: None)
    assert len(small.members()) == 2
    procs = lab_processes(down_layout)
    assert len(procs) >= 5  # etcd, 2 x Patroni, 2 x postmaster at least
    started = time.monotonic()
    small.down()
    assert time.monotonic() - started < 10
    assert_nothing_left(down_layout, procs)
    small.down()  # idempotent
    out = cli("down", "--prefix", DOWN_PREFIX)
    assert out.returncode == 0 and "nothing to remove" in out.stdout
    # The session lab on its own prefix and subnet is untouched.
    assert netns.has_unreachable_route(lab.layout.subnet)
    lab.wait_ready(timeout=30, progress=lambda _m: None)


def test_up_timeout_names_what_is_missing(down_layout: LabLayout) -> None:
    small = Lab(down_layout, pgvip=False)
    try:
        with pytest.raises(LabError) as err:
            small.up(timeout=2.5, progress=lambda _m: None)
        text = str(err.value)
        assert "lab not ready after" in text and "last lines of" in text
        assert f"pgvip lab down --prefix {DOWN_PREFIX}" in text
        assert json.loads(down_layout.state_file.read_text())["phase"] == "failed"
    finally:
        procs = lab_processes(down_layout)
        small.down()
    assert_nothing_left(down_layout, procs)


@pytest.mark.parametrize("delay", [1.0, 3.0])
def test_down_after_sigkill_of_up(down_layout: LabLayout, delay: float) -> None:
    up = subprocess.Popen(
        [PGVIP, "lab", "up", "--prefix", DOWN_PREFIX, "--subnet", DOWN_SUBNET,
         "--nodes", "2", "--no-pgvip"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(delay)
    assert up.poll() is None, "lab up finished before it could be killed"
    up.send_signal(signal.SIGKILL)
    up.wait(timeout=10)
    # It got far enough to leave a half-built lab for `down` to find.
    assert down_layout.state_file.exists()
    assert netns.exists(down_layout.switch_ns)
    procs = lab_processes(down_layout)
    assert procs, "nothing was started before the kill"
    out = cli("down", "--prefix", DOWN_PREFIX)
    assert out.returncode == 0 and f"lab {DOWN_PREFIX} removed" in out.stdout, out.stderr
    assert_nothing_left(down_layout, procs)
