"""The RO VIP against real Patroni and PostgreSQL in the netns lab: kernel round-robin
over the healthy replicas (nftables here: this kernel has no IPVS), health, lag,
fallback to the primary, and a director that fails over."""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Callable

import pytest

from pgvip.lab import processes
from pgvip.lab.cluster import Lab
from pgvip.lab.layout import PG_PORT, SUPERUSER, SUPERUSER_PASSWORD
from pgvip.lab.observe import vip_holders

pytestmark = pytest.mark.integration

NODE = re.compile(r"p[0-9]")
RO_POLL = 1.0  # ro.poll_interval default: the director probes once a second


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ro_nodes(lab: Lab, count: int) -> collections.Counter[str]:
    """`count` new connections to the RO VIP; which node served each (or 'error: ...')."""
    conninfo = (
        f"host={lab.layout.ro_vip} port={PG_PORT} user={SUPERUSER} "
        f"password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2"
    )
    # One client process, many connections: each \\connect is a new TCP connection.
    script = "".join(
        f"\\connect '{conninfo}'\nselect current_setting('pgvip.node');\n" for _ in range(count)
    )
    proc = lab.run(
        "client",
        [str(lab.pg_bin / "psql"), "-X", "-q", "-At", "-f", "-", conninfo],
        timeout=60,
        env=processes.CLEAN_ENV,
        input=script,
    )
    served = collections.Counter(line for line in proc.stdout.split() if NODE.fullmatch(line))
    failures = count - sum(served.values())
    if failures:
        served["error"] = failures
        # Why they failed, for the assertion message: psql's first error lines.
        served.update(f"psql: {line.strip()[:120]}" for line in proc.stderr.splitlines()[:3])
    return served


def replicas(lab: Lab) -> list[str]:
    leader = lab.leader()
    return [n for n in lab.layout.node_names() if n != leader]


def director(lab: Lab) -> str | None:
    holders = vip_holders(lab.layout, lab.layout.ro_vip)
    assert len(holders) <= 1, f"RO VIP on {holders}"
    return holders[0] if holders else None


@pytest.fixture
def ro_lab(lab_ready: Lab) -> Lab:
    if not lab_ready.pgvip:
        pytest.fail("the RO tests need pgvip in the lab (PGVIP_TEST_PGVIP=1)")
    # The director needs `rise` good probe rounds before it programs a backend.
    wait(lambda: set(ro_nodes(lab_ready, 4)) <= set(replicas(lab_ready)) and
         len(ro_nodes(lab_ready, 6)) == 2, 30, "the RO pool to hold both replicas")  # fmt: skip
    return lab_ready


def test_round_robin_over_both_replicas_never_the_leader(ro_lab: Lab) -> None:
    served = ro_nodes(ro_lab, 100)
    reps = replicas(ro_lab)
    assert set(served) == set(reps), served
    for node in reps:
        assert served[node] >= 40, f"unbalanced: {served}"
    boss = director(ro_lab)
    assert boss in reps, "a replica should direct, not the leader"
    # The director's /metrics shows the pool it programs.
    metrics = ro_lab.run(boss, ["curl", "-s", "http://127.0.0.1:8010/metrics"]).stdout
    assert "pgvip_ro_backends_healthy 2.0" in metrics, metrics[-2000:]


def test_a_stopped_replica_leaves_the_pool(ro_lab: Lab) -> None:
    gone, stays = replicas(ro_lab)
    ro_lab.stop(gone, "patroni")  # stops its PostgreSQL too
    # fall 2 probes at 1 s, plus the time Patroni takes to stop PostgreSQL
    wait(lambda: ro_nodes(ro_lab, 10) == {stays: 10}, 2 * RO_POLL + 8, f"{gone} out of the pool")
    served = ro_nodes(ro_lab, 30)
    assert served == {stays: 30}, served


def test_a_replica_whose_node_is_cut_off_leaves_within_seconds(ro_lab: Lab) -> None:
    """The other replica's whole node goes away (switch port down): its connects go
    unanswered, so the director takes it out long before Patroni forgets it (ttl) and before
    ro.fall probe rounds of 1 s timeouts would."""
    boss = director(ro_lab)
    gone = next(n for n in replicas(ro_lab) if n != boss)
    ro_lab.partition(gone)
    try:
        took = wait(lambda: ro_nodes(ro_lab, 6) == {boss: 6}, 15, f"{gone} out of the pool")
        assert ro_nodes(ro_lab, 20) == {boss: 20}
        assert gone in [m["name"] for m in ro_lab.members()]  # Patroni still lists it
        log = ro_lab.log_path(boss, "pgvip").read_text(errors="replace")
        assert "connects in a row (0.3 s each): host unreachable" in log, log[-3000:]
    finally:
        ro_lab.heal(gone)
    print(f"cut-off replica out of the pool after {took:.2f} s")
    wait(lambda: gone in ro_nodes(ro_lab, 10), 40, f"{gone} back after the heal")


def test_a_lagging_replica_leaves_and_returns(ro_lab: Lab) -> None:
    leader = ro_lab.leader()
    lagging, _ = replicas(ro_lab)
    leader_ip = ro_lab.layout.node_ip(leader or "")
    block = ["nft", "-f", "-"]
    rules = (
        "table inet pgvt_lag {\n chain out {\n  type filter hook output priority 0;\n"
        f"  ip daddr {leader_ip} tcp dport {PG_PORT} drop\n }}\n}}\n"
    )
    ro_lab.run(lagging, block, input=rules, check=True)
    try:
        ro_lab.run(lagging, ["ss", "-K", "dst", str(leader_ip), "dport", "=", str(PG_PORT)])
        conninfo = (f"host={ro_lab.layout.rw_vip} user={SUPERUSER} "
                    f"password={SUPERUSER_PASSWORD} dbname=postgres")  # fmt: skip
        # ~64 MB of WAL, well past ro.max_lag (16MB)
        sql = (
            "create table if not exists lag_fill (x text); "
            "insert into lag_fill select repeat('x', 1000) from generate_series(1, 60000);"
        )
        ro_lab.run("client", [str(ro_lab.pg_bin / "psql"), "-X", "-c", sql, conninfo],
                   check=True, timeout=60, env=processes.CLEAN_ENV)  # fmt: skip
        wait(lambda: lagging not in ro_nodes(ro_lab, 10), 20, f"lagging {lagging} out of the pool")
    finally:
        ro_lab.run(lagging, ["nft", "delete", "table", "inet", "pgvt_lag"])
    wait(lambda: lagging in ro_nodes(ro_lab, 10), 40, f"{lagging} back after catching up")


def test_all_replicas_down_falls_back_to_the_primary(ro_lab: Lab) -> None:
    leader = ro_lab.leader()
    for node in replicas(ro_lab):
        ro_lab.stop(node, "patroni")
    # The director was a replica: with every replica's Patroni down, the leader is the only
    # node eligible for the RO VIP, so it becomes the director and serves from itself.
    stopped = replicas(ro_lab)

    def ro_state(node: str) -> str | None:
        out = ro_lab.run(node, [str(ro_lab.venv_bin / "pgvip"), "status", "--json"]).stdout
        try:
            return str(json.loads(out)["instances"]["ro"]["state"])
        except (ValueError, KeyError, TypeError):
            return None

    # Settled: the stopped replicas' RO instances are in FAULT (they cannot ask their
    # Patroni), and the leader, the only eligible node left, directs.
    wait(
        lambda: all(ro_state(n) == "FAULT" for n in stopped) and director(ro_lab) == leader,
        30,
        "stopped replicas in FAULT and the leader directing",
    )
    wait(lambda: ro_nodes(ro_lab, 5) == {leader: 5}, 15, "the leader serving the RO VIP")
    assert ro_nodes(ro_lab, 20) == {leader: 20}


def test_after_a_switchover_the_pool_follows(ro_lab: Lab) -> None:
    old = ro_lab.leader()
    assert old is not None
    new = replicas(ro_lab)[0]
    ro_lab.switchover(old, new)
    wait(lambda: ro_lab.leader() == new, 30, f"leader {new}")
    wait(lambda: set(ro_nodes(ro_lab, 20)) == set(replicas(ro_lab)), 40,
         "the old leader serving as a replica backend")  # fmt: skip
    assert old in ro_nodes(ro_lab, 20)


def test_kill_9_of_the_director_moves_the_balancer(ro_lab: Lab) -> None:
    first = director(ro_lab)
    assert first is not None
    ro_lab.kill(first, "pgvip")
    # A killed daemon cannot clean up: under systemd, ExecStopPost runs `pgvip release`.
    release = ro_lab.run(first, [str(ro_lab.venv_bin / "pgvip"), "release", "--interface", "eth0"])
    assert release.returncode == 0, release.stderr
    assert "10.20" in release.stdout or str(ro_lab.layout.ro_vip) in release.stdout
    assert "pgvip" not in ro_lab.run(first, ["nft", "list", "tables"]).stdout
    wait(lambda: director(ro_lab) not in (None, first), 10, "a new director")
    # Settled: the new director has warmed up (rise probe rounds) and applied its table.
    wait(
        lambda: "error" not in ro_nodes(ro_lab, 20) and director(ro_lab) not in (None, first),
        20,
        "the new director balancing",
    )
    served = ro_nodes(ro_lab, 20)
    assert "error" not in served and sum(served.values()) == 20, served
