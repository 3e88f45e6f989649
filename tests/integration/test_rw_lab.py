"""The RW VIP against real Patroni, PostgreSQL and etcd in the netns lab: it sits on
the leader, follows switchover and failover, and is never on two nodes."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgvip.lab import accept_sampler, processes
from pgvip.lab.cluster import Lab
from pgvip.lab.layout import PG_PORT, SUPERUSER, SUPERUSER_PASSWORD
from pgvip.lab.sampler import VipSampler

pytestmark = pytest.mark.integration


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sql_via_vip(lab: Lab, sql: str) -> str:
    conninfo = (
        f"host={lab.layout.rw_vip} port={PG_PORT} user={SUPERUSER} "
        f"password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=3"
    )
    proc = lab.run(
        "client",
        [str(lab.pg_bin / "psql"), "-X", "-At", "-c", sql, conninfo],
        timeout=10,
        env=processes.CLEAN_ENV,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def rw_lab(lab_ready: Lab) -> Iterator[tuple[Lab, VipSampler]]:
    """The lab with pgvip, and a sampler that checks every namespace every 20 ms."""
    if not lab_ready.pgvip:
        pytest.fail("the RW tests need pgvip in the lab (PGVIP_TEST_PGVIP=1)")
    sampler = VipSampler(lab_ready.layout, vips=[lab_ready.layout.rw_vip])
    sampler.start(interval=0.02)
    try:
        yield lab_ready, sampler
    finally:
        sampler.stop()
        doubles = sampler.double_holder_events()
        stats = sampler.stats()
        sampler.close()
    # Throughout every test: never the VIP on two nodes.
    assert not doubles, f"RW VIP on two nodes at once: {doubles}"
    assert stats.get("samples", 1) > 0


def holders(sampler: VipSampler, lab: Lab) -> list[str]:
    return sampler.holders(lab.layout.rw_vip)


def test_rw_vip_is_on_the_leader_and_takes_writes(rw_lab: tuple[Lab, VipSampler]) -> None:
    lab, sampler = rw_lab
    leader = lab.leader()
    assert leader is not None
    assert holders(sampler, lab) == [leader]
    sql_via_vip(lab, "create table if not exists rw_probe (at timestamptz default now())")
    sql_via_vip(lab, "insert into rw_probe default values")
    assert sql_via_vip(lab, "select pg_is_in_recovery()") == "f"
    assert sql_via_vip(lab, "select current_setting('pgvip.node')") == leader


def test_rw_vip_follows_a_switchover(rw_lab: tuple[Lab, VipSampler]) -> None:
    lab, sampler = rw_lab
    leader = lab.leader()
    assert leader is not None
    candidate = next(n for n in lab.layout.node_names() if n != leader)
    # What a client's SYN meets at each node (by MAC, whatever its ARP cache says).
    with accept_sampler.for_lab(lab.layout, str(lab.layout.rw_vip), PG_PORT) as syns:
        time.sleep(0.3)
        t_switch = time.monotonic()
        lab.switchover(leader, candidate)
        wait(lambda: lab.leader() == candidate, 30, f"Patroni leader {candidate}")
        wait(lambda: holders(sampler, lab) == [candidate], 10, f"RW VIP on {candidate}")
        time.sleep(0.5)
    assert len(syns.rounds) > 10
    assert not syns.doubles(), f"two nodes accepted at once: {syns.doubles()[:3]}"
    for node in lab.layout.node_names():
        seen = syns.outcomes(node, since=t_switch)
        # Reset (the guard, or PostgreSQL down) is fine; a silent drop costs a client its
        # whole connect timeout.
        assert not seen["silent"], f"{node} dropped SYNs silently: {seen}"
    assert syns.outcomes(leader, until=t_switch)["accept"]
    assert syns.rounds[-1].accepting == (candidate,)
    assert sql_via_vip(lab, "select current_setting('pgvip.node')") == candidate
    assert sql_via_vip(lab, "select pg_is_in_recovery()") == "f"
    assert sampler.max_holders(lab.layout.rw_vip) == 1


def test_rw_vip_follows_failover_after_kill_9(rw_lab: tuple[Lab, VipSampler]) -> None:
    lab, sampler = rw_lab
    old = lab.leader()
    assert old is not None
    lab.kill(old, "patroni")
    lab.kill(old, "postgres")
    # The old node's pgvip cannot ask Patroni any more: it releases after `fall` polls.
    wait(lambda: old not in holders(sampler, lab), 5, f"RW VIP off the dead leader {old}")
    new = None

    def failed_over() -> bool:
        nonlocal new
        new = lab.leader()
        return new not in (None, old)

    wait(failed_over, 60, "Patroni failover")  # ttl 20 s
    wait(lambda: holders(sampler, lab) == [new], 10, f"RW VIP on the new leader {new}")
    assert sql_via_vip(lab, "select current_setting('pgvip.node')") == new
    assert sampler.max_holders(lab.layout.rw_vip) == 1


def test_sigterm_of_the_holders_pgvip_releases_at_once(rw_lab: tuple[Lab, VipSampler]) -> None:
    lab, sampler = rw_lab
    leader = lab.leader()
    assert leader is not None and holders(sampler, lab) == [leader]
    pid = lab.pid(leader, "pgvip")
    assert pid is not None
    started = time.monotonic()
    lab.stop(leader, "pgvip", signal.SIGTERM, timeout=5)
    exited = time.monotonic() - started
    assert exited < 1.5, f"pgvip took {exited:.2f}s to exit on SIGTERM"
    assert not Path(f"/proc/{pid}").exists()
    # Released at once; no peer may take it, since no peer is Patroni's leader.
    assert holders(sampler, lab) == []
    time.sleep(1.5)
    assert holders(sampler, lab) == []
    lab.start(leader, "pgvip")
    took = wait(lambda: holders(sampler, lab) == [leader], 10, "RW VIP back after restart")
    assert took < 5


def test_a_vip_deleted_by_hand_comes_back(rw_lab: tuple[Lab, VipSampler]) -> None:
    lab, sampler = rw_lab
    leader = lab.leader()
    assert leader is not None and holders(sampler, lab) == [leader]
    lab.run(leader, ["ip", "addr", "del", f"{lab.layout.rw_vip}/24", "dev", "eth0"], check=True)
    took = wait(lambda: holders(sampler, lab) == [leader], 5, "RW VIP re-added")
    assert took < 3  # the reconcile period is 2 s; the netlink watcher is faster


def test_pgvip_runs_unprivileged_with_two_capabilities(rw_lab: tuple[Lab, VipSampler]) -> None:
    lab, _ = rw_lab
    for node in lab.layout.node_names():
        pid = lab.pid(node, "pgvip")
        assert pid is not None, f"no pgvip on {node}"
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] != "0", f"pgvip on {node} runs as root"
        assert int(fields["CapEff"], 16) == (1 << 12) | (1 << 13)  # NET_ADMIN, NET_RAW
