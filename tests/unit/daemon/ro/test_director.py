"""The RO Director against real aiohttp stand-ins (local /cluster, each member's /replica) and a
fake load balancer: warm-up, lag and departures drain, fallback, garbage /cluster, apply errors,
deactivation, the run loop, DR real-server hooks and the SQL probe."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pgvip.daemon.ro.balancing import RetuneRefused
from pgvip.daemon.ro.director import WARMUP_SPACING, Director, DirectorError
from pgvip.daemon.ro.phases import Phase
from pgvip.daemon.ro.probes import psycopg_probe
from pgvip.dataplane.balancer import IPAddress, RealServer, VirtualService
from pgvip.patroni.client import PatroniClient
from pgvip.vrrp.actions import Transition
from pgvip.vrrp.states import State
from tests.unit.daemon.ro_standins import (
    HOSTS,
    Clock,
    Cluster,
    FakeBalancer,
    RecordingLog,
    cluster,  # noqa: F401  (fixture)
    ro_config,
)

MB16 = 16 * 1024**2
VIP = IPv4Address("10.0.0.100")
TO_MASTER = Transition(State.BACKUP, State.MASTER, "master down", 150)
FROM_MASTER = Transition(State.MASTER, State.BACKUP, "higher priority", 150)


def rs(*names: str, weight: int = 1, port: int = 5432) -> tuple[RealServer, ...]:
    return tuple(RealServer(IPv4Address(HOSTS[n]), port, weight) for n in names)


def service(*backends: RealServer, forwarding: str = "nat", port: int = 5432) -> VirtualService:
    return VirtualService(VIP, port, tuple(backends), forwarding=forwarding)


class Rig:
    """A Director on a fake clock with its fake balancer and recording log."""

    def __init__(self, client: PatroniClient, **changes: Any) -> None:
        self.clock = Clock()
        self.lb = FakeBalancer()
        self.log = RecordingLog()
        extra = {k: changes.pop(k) for k in ("real_server", "sql_probe") if k in changes}
        self.director = Director(
            ro_config(**changes),
            client,
            self.lb,
            log=self.log,
            clock=self.clock,
            reconcile_interval=5.0,
            **extra,
        )

    async def step(self, advance: float = 1.0) -> None:
        self.clock.advance(advance)
        await self.director.step()

    async def become_director(self) -> None:
        """Start-up standby step, then MASTER and the warm-up (rise 2: two rounds)."""
        await self.step()
        self.director.on_transition(TO_MASTER)
        await self.step()
        assert self.lb.applied == []  # warm-up: nothing programmed after one round
        await self.step(WARMUP_SPACING)

    def states(self) -> dict[str, str]:
        return {b.member: b.state for b in self.director.status().backends}


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[PatroniClient]:  # noqa: F811
    async with PatroniClient(cluster.local.url, timeout=2.0) as c:
        yield c


# -- healthy set ---------------------------------------------------------------------------


async def test_healthy_replicas_are_balanced_after_the_warm_up(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.step()
    assert rig.lb.clears == 1  # whatever an earlier run left is cleared at start-up
    assert not rig.director.active
    await rig.become_director()

    assert rig.lb.current == service(*rs("p2", "p3"))
    # Each member's own REST API was asked, with max_lag in bytes; the leader never.
    assert cluster.apis["p2"].queries == [{"lag": str(MB16)}] * 2
    assert cluster.apis["p3"].queries == [{"lag": str(MB16)}] * 2
    assert cluster.apis["p1"].queries == []

    status = rig.director.status()
    assert status.active and status.dataplane == "fake" and status.forwarding == "nat"
    assert status.reason == "2 healthy replica(s): p2, p3"
    assert not status.fallback_active
    assert rig.states() == {"p1": "leader", "p2": "active", "p3": "active"}
    p2 = next(b for b in status.backends if b.member == "p2")
    assert (p2.address, p2.port, p2.weight, p2.lag, p2.last_error) == (
        "10.0.0.12",
        5432,
        1,
        0,
        None,
    )
    assert status.applies == 1 and status.apply_errors == 0 and status.last_apply_error is None
    doc = json.loads(json.dumps(status.as_dict()))
    assert doc["applied"]["backends"] == [
        {"address": "10.0.0.12", "port": 5432, "weight": 1},
        {"address": "10.0.0.13", "port": 5432, "weight": 1},
    ]
    assert "RO director active" in rig.log.events("info")
    assert "RO backends applied" in rig.log.events("info")


class NftablesNamedBalancer(FakeBalancer):
    name = "nftables"


async def test_status_fits_the_status_api_schema(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    yaml = pytest.importorskip("yaml")
    openapi = yaml.safe_load(
        (Path(__file__).resolve().parents[4] / "docs/openapi.yaml").read_text()
    )
    validator = jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/RoInfo", "components": openapi["components"]}
    )
    rig = Rig(client)
    rig.lb = NftablesNamedBalancer()
    rig.director = Director(
        ro_config(), client, rig.lb, log=rig.log, clock=rig.clock, dataplane_reason="nft asked"
    )
    idle = rig.director.status().ro_info()
    assert validator.is_valid(idle) and not idle["directing"] and idle["backends"] == []
    await rig.become_director()
    cluster.apis["p3"].status = 503
    await rig.step()
    await rig.step()
    info = rig.director.status().ro_info()
    assert validator.is_valid(json.loads(json.dumps(info))), list(validator.iter_errors(info))
    assert info["directing"] and info["dataplane"] == "nftables"
    assert info["dataplane_reason"] == "nft asked"
    assert info["forwarding_reason"].startswith("nat, one-armed: nftables DNAT plus masquerade")
    assert (info["healthy"], info["total"]) == (1, 2)
    by_member = {b["member"]: b for b in info["backends"]}
    assert by_member["p3"]["state"] == "draining" and not by_member["p3"]["healthy"]
    assert by_member["p3"]["weight"] == 0
    assert by_member["p2"]["healthy"] and by_member["p2"]["last_error"] is None
    assert by_member["p1"]["state"] == "leader" and by_member["p1"]["last_probe_at"] is None
    probed = by_member["p2"]["last_probe_at"]
    assert probed is not None and abs(probed - time.time()) < 5


async def test_unchanged_set_is_reapplied_only_every_reconcile_interval(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    assert len(rig.lb.applied) == 1
    for _ in range(4):
        await rig.step()
    assert len(rig.lb.applied) == 1
    rig.lb.current = None  # someone flushed the table behind our back
    await rig.step(1.5)
    assert len(rig.lb.applied) == 2 and rig.lb.current == service(*rs("p2", "p3"))
    assert "RO balancer drift repaired" in rig.log.events("warning")


# -- backends leaving ------------------------------------------------------------------------


async def test_a_lagging_replica_leaves_at_its_first_503_then_drains(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    cluster.apis["p3"].status = 503  # what Patroni answers to /replica?lag= when behind
    await rig.step()
    # The replica's own "no" is not a doubt: out at once, not after fall (2).
    assert rig.lb.current == service(*rs("p2"), *rs("p3", weight=0))
    assert rig.states()["p3"] == "draining"
    p3 = next(b for b in rig.director.status().backends if b.member == "p3")
    assert p3.weight == 0
    assert p3.last_error is not None and "/replica 503" in p3.last_error
    assert f"lag {MB16} B" in p3.last_error
    await rig.step(10.0)  # drain_timeout
    assert rig.lb.current == service(*rs("p2"))
    assert rig.states()["p3"] == "down"


async def test_lag_reported_by_cluster_also_takes_a_replica_out(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    cluster.member("p2")["lag"] = 100 * 1024**2
    await rig.step()
    await rig.step()
    assert rig.lb.current == service(*rs("p3"), *rs("p2", weight=0))
    assert "> max_lag" in next(b.reason for b in rig.director.status().backends if b.member == "p2")


async def test_a_member_gone_from_cluster_drains_then_is_removed(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    cluster.remove("p3")
    await rig.step()
    assert rig.lb.current == service(*rs("p2"), *rs("p3", weight=0))
    await rig.step(9.0)
    assert rig.lb.current == service(*rs("p2"), *rs("p3", weight=0))
    await rig.step(1.0)
    assert rig.lb.current == service(*rs("p2"))
    assert "p3" not in rig.states()


async def test_all_replicas_down_falls_back_to_the_primary(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    cluster.apis["p2"].status = 503
    cluster.apis["p3"].status = 500  # no answer at all counts as bad too
    await rig.step()
    await rig.step()
    assert rig.lb.current == service(*rs("p1"), *rs("p2", "p3", weight=0))
    status = rig.director.status()
    assert status.fallback_active
    assert status.reason.startswith("no healthy replica; fallback to primary p1")
    await rig.step(10.0)
    assert rig.lb.current == service(*rs("p1"))
    # One replica rises again (rise 2): the primary drains and the replica takes over.
    cluster.apis["p2"].status = 200
    await rig.step()
    assert rig.lb.current == service(*rs("p1"))
    await rig.step()
    assert rig.lb.current == service(*rs("p2"), *rs("p1", weight=0))
    assert not rig.director.status().fallback_active


async def test_fallback_none_leaves_an_empty_service(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, fallback="none", drain_timeout=0.0)
    await rig.become_director()
    cluster.apis["p2"].status = cluster.apis["p3"].status = 503
    await rig.step()
    await rig.step()
    assert rig.lb.current == service()
    assert rig.director.status().reason == "no healthy replica; fallback 'none': no backend"


async def test_noloadbalance_members_are_not_probed_and_excluded(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    cluster.member("p3")["tags"] = {"noloadbalance": True}
    del cluster.member("p2")["api_url"]
    rig = Rig(client)
    await rig.become_director()
    assert cluster.apis["p3"].queries == []
    states = rig.states()
    assert states["p3"] == "excluded" and states["p2"] == "down"
    status = rig.director.status()
    assert next(b.last_error for b in status.backends if b.member == "p2") == (
        "no api_url in /cluster"
    )
    assert rig.lb.current == service(*rs("p1"))  # nothing healthy: fallback


async def test_a_slow_member_api_fails_its_probe_after_probe_timeout(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    cluster.apis["p3"].delay = 3.0
    rig = Rig(client, probe_timeout=0.2)
    started = time.monotonic()
    await rig.become_director()
    assert time.monotonic() - started < 2.0  # probes run concurrently and are bounded
    assert rig.lb.current == service(*rs("p2"))
    last = next(b.last_error for b in rig.director.status().backends if b.member == "p3")
    assert last is not None and last.startswith("timeout after 0.2 s")


# -- garbage /cluster ------------------------------------------------------------------------


async def test_garbage_cluster_keeps_the_last_good_set_and_logs_once_per_reason(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    good = service(*rs("p2", "p3"))
    cluster.garbage(b"<html>502 Bad Gateway</html>")
    for _ in range(3):
        await rig.step()
    assert rig.lb.current == good
    status = rig.director.status()
    assert status.cluster_error is not None and status.cluster_error.startswith("garbage /cluster")
    assert status.cluster_errors == 3
    warnings = [e for e in rig.log.events("warning") if "/cluster" in e]
    assert len(warnings) == 1
    kept = [kw for lv, e, kw in rig.log.records if lv == "warning" and "/cluster" in e]
    assert kept[0]["action"] == "keeping the last good set of 3 member(s)"

    # A different problem is a new log line; members are still probed meanwhile.
    cluster.garbage(json.dumps({"members": [{"name": "p2"}]}).encode())
    cluster.apis["p3"].status = 503
    await rig.step()
    await rig.step()
    assert len([e for e in rig.log.events("warning") if "/cluster" in e]) == 2
    assert rig.lb.current == service(*rs("p2"), *rs("p3", weight=0))

    cluster.local.raw = None
    cluster.local.cluster_status = 500
    await rig.step()
    assert "no /cluster answer" in (rig.director.status().cluster_error or "")
    cluster.local.cluster_status = 200
    await rig.step()
    assert rig.director.status().cluster_error is None
    assert "/cluster answering again" in rig.log.events("info")


async def test_no_good_cluster_yet_programs_nothing(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    cluster.garbage(b"{}")
    rig = Rig(client)
    await rig.step()
    rig.director.on_transition(TO_MASTER)
    for _ in range(3):
        await rig.step()
    assert rig.lb.applied == []
    status = rig.director.status()
    assert status.active and status.reason.startswith("garbage /cluster answer")
    warning = next(kw for lv, e, kw in rig.log.records if lv == "warning")
    assert warning["action"] == "no good /cluster yet: nothing to balance"


# -- deactivation and failures -----------------------------------------------------------------


async def test_leaving_master_clears_and_coming_back_warms_up_again(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    clears = rig.lb.clears
    rig.director.on_transition(FROM_MASTER)
    await rig.step()
    assert rig.lb.clears == clears + 1 and rig.lb.current is None
    status = rig.director.status()
    assert not status.active and status.reason == "not the RO director"
    assert status.backends == () and status.applied is None
    # Transitions that do not involve MASTER change nothing.
    rig.director.on_transition(Transition(State.BACKUP, State.FAULT, "ineligible", 150))
    await rig.step()
    assert rig.lb.clears == clears + 1
    rig.director.on_transition(TO_MASTER)
    await rig.step()
    assert rig.lb.current is None  # a fresh policy: rise again before programming
    await rig.step(WARMUP_SPACING)
    assert rig.lb.current == service(*rs("p2", "p3"))


async def test_apply_errors_are_counted_logged_once_and_retried(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    rig.lb.fail = "nft -j -f - failed: Error: Could not process rule"
    await rig.step()  # the start-up clear fails too, and is retried later
    assert rig.director.status().clear_errors == 1
    rig.director.on_transition(TO_MASTER)
    await rig.step()
    for _ in range(3):
        await rig.step()
    status = rig.director.status()
    assert status.apply_errors == 3
    assert (
        status.last_apply_error is not None and "Could not process rule" in status.last_apply_error
    )
    assert rig.log.events("error").count("RO balancer apply failed; retrying next poll") == 1
    rig.lb.fail = None
    await rig.step()
    status = rig.director.status()
    assert rig.lb.current == service(*rs("p2", "p3"))
    assert status.last_apply_error is None and status.applies == 1
    assert "RO balancer applied again" in rig.log.events("info")


async def test_deactivation_cancels_a_probe_round_in_flight(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, probe_timeout=10.0)
    await rig.step()
    rig.director.on_transition(TO_MASTER)
    await rig.step()
    cluster.apis["p2"].delay = 5.0
    step = asyncio.create_task(rig.step(WARMUP_SPACING))
    while not cluster.apis["p2"].queries or len(cluster.apis["p2"].queries) < 2:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    rig.director.on_transition(FROM_MASTER)
    await asyncio.wait_for(step, 1.0)
    assert time.monotonic() - started < 0.5
    assert rig.lb.applied == []


async def test_stop_waits_for_an_apply_then_clears(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    rig.lb.delay = 0.2
    rig.lb.current = None  # force a re-apply on the next step
    step = asyncio.create_task(rig.step(6.0))
    await asyncio.sleep(0.05)
    assert rig.lb.calls[-1] == "apply"
    await rig.director.stop()
    await step
    assert rig.lb.calls[-2:] == ["apply", "clear"] and rig.lb.current is None
    rig.director.on_transition(TO_MASTER)  # inert after stop
    await rig.director.step()
    assert rig.lb.current is None and not rig.director.active


async def test_stop_after_the_standby_cycle_cleared_does_not_clear_again(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    """SIGTERM releases the RO instance first, so its standby cycle clears; stop() then waits
    for that clear instead of doing a second one inside its shutdown budget."""
    rig = Rig(client)
    await rig.become_director()
    before = rig.lb.clears
    rig.lb.clear_delay = 0.2
    rig.director.on_transition(FROM_MASTER)
    step = asyncio.create_task(rig.step())
    while rig.lb.calls[-1:] != ["clear"]:
        await asyncio.sleep(0.01)
    await rig.director.stop()  # while the standby cycle's clear is under way
    await step
    assert rig.lb.clears == before + 1 and rig.lb.current is None
    assert rig.director.phase.value == "stopped"


# -- the run loop on the real clock ----------------------------------------------------------


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_run_follows_transitions_and_stop_clears(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    lb = FakeBalancer()
    director = Director(
        ro_config(poll_interval=0.05), client, lb, log=RecordingLog(), reconcile_interval=0.2
    )
    task = asyncio.create_task(director.run())
    try:
        await wait_until(lambda: lb.clears == 1)
        director.on_transition(TO_MASTER)
        await wait_until(lambda: lb.current == service(*rs("p2", "p3")))
        director.on_transition(FROM_MASTER)
        await wait_until(lambda: lb.current is None and lb.clears == 2)
        director.on_transition(TO_MASTER)
        await wait_until(lambda: lb.current is not None)
        cluster.apis["p3"].status = 503
        await wait_until(lambda: lb.current == service(*rs("p2"), *rs("p3", weight=0)))
        await director.stop()
        assert lb.current is None
        await asyncio.wait_for(task, 1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_run_warms_up_fast_then_keeps_poll_interval(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    lb = FakeBalancer()
    director = Director(ro_config(poll_interval=5.0), client, lb, log=RecordingLog())
    task = asyncio.create_task(director.run())
    try:
        await wait_until(lambda: lb.clears == 1)
        started = time.monotonic()
        director.on_transition(TO_MASTER)
        await wait_until(lambda: lb.current is not None)
        # rise 2: two rounds WARMUP_SPACING apart, not poll_interval (5 s) apart.
        assert WARMUP_SPACING <= time.monotonic() - started < 1.0
        assert len(cluster.apis["p2"].queries) == 2
        await asyncio.sleep(0.3)
        assert len(cluster.apis["p2"].queries) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- DR real servers -----------------------------------------------------------------------


class FakeRealServer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, IPAddress]] = []
        self.on_lo = False

    async def setup(self, vip: IPAddress) -> bool:
        self.calls.append(("setup", vip))
        added, self.on_lo = not self.on_lo, True
        return added

    async def teardown(self, vip: IPAddress) -> bool:
        self.calls.append(("teardown", vip))
        removed, self.on_lo = self.on_lo, False
        return removed


async def test_dr_puts_the_vip_on_lo_except_while_directing(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    hooks = FakeRealServer()
    rig = Rig(client, forwarding="dr", port=6432, real_server=hooks)
    await rig.step()
    assert hooks.on_lo and hooks.calls == [("setup", VIP)]
    await rig.step(5.0)  # re-checked while standing by (idempotent)
    assert hooks.calls[-1] == ("setup", VIP) and hooks.on_lo
    rig.director.on_transition(TO_MASTER)
    await rig.step()
    assert not hooks.on_lo and hooks.calls[-1] == ("teardown", VIP)
    await rig.step(WARMUP_SPACING)
    # DR cannot rewrite ports: every backend is on ro.port.
    assert rig.lb.current == service(*rs("p2", "p3", port=6432), forwarding="dr", port=6432)
    assert [c[0] for c in hooks.calls].count("teardown") == 1
    rig.director.on_transition(FROM_MASTER)
    await rig.step()
    assert hooks.on_lo and rig.lb.current is None
    assert "RO VIP on lo: DR real server of the director" in rig.log.events("info")


async def test_nat_takes_a_dr_leftover_off_lo_once_then_leaves_lo_alone(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    """A reload from "dr" to "nat" builds a new director; the old one's VIP on lo would make
    this node answer its own RO clients itself. It goes at the first standby cycle."""
    hooks = FakeRealServer()
    hooks.on_lo = True  # what the "dr" config left
    rig = Rig(client, real_server=hooks)
    await rig.step()
    assert hooks.calls == [("teardown", VIP)] and not hooks.on_lo
    assert "RO VIP removed from lo: ro.forwarding is nat, not dr" in rig.log.events("info")
    await rig.become_director()
    rig.director.on_transition(FROM_MASTER)
    await rig.step()
    await rig.step(5.0)
    assert hooks.calls == [("teardown", VIP)]  # never again


# -- the SQL probe ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_psycopg_probe_reports_a_refused_connection() -> None:
    port = free_port()
    result = await psycopg_probe("p2", "127.0.0.1", port, 1.0)
    assert not result.ok and result.kind == "sql" and result.member == "p2"
    assert result.reason.startswith(f"SQL: 127.0.0.1:{port}: ")
    assert "refused" in result.reason


async def test_sql_probe_that_hangs_is_cut_at_probe_timeout(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    # A server that accepts and never says a word: libpq would wait at least 2 s.
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cluster.member("p2").update(host="127.0.0.1", port=port)
        cluster.member("p3")["tags"] = {"noloadbalance": True}
        rig = Rig(client, probe_sql=True, probe_timeout=0.3)
        started = time.monotonic()
        await rig.become_director()
        assert time.monotonic() - started < 1.5
        p2 = next(b for b in rig.director.status().backends if b.member == "p2")
        assert p2.state == "down"
        assert p2.last_error == f"SQL: timeout after 0.3 s: 127.0.0.1:{port}"
        assert rig.lb.current == service(*rs("p1"))  # /replica said 200, SQL did not
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def test_sql_probe_results_combine_with_http(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    from pgvip.policy.backends import ProbeResult

    asked: list[tuple[str, str, int, float]] = []

    async def standby_only_p2(member: str, host: str, port: int, timeout: float) -> ProbeResult:
        asked.append((member, host, port, timeout))
        return ProbeResult(member, member == "p2", f"SQL {member}", time.monotonic(), kind="sql")

    rig = Rig(client, probe_sql=True, sql_probe=standby_only_p2)
    await rig.become_director()
    assert sorted(asked)[:1] == [("p2", "10.0.0.12", 5432, 1.0)]
    assert rig.lb.current == service(*rs("p2"))
    assert rig.states()["p3"] == "down"


def test_importing_the_director_does_not_import_psycopg() -> None:
    code = "import sys, pgvip.daemon.ro.director; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- construction --------------------------------------------------------------------------


async def test_a_director_needs_an_ro_vip(client: PatroniClient) -> None:
    with pytest.raises(DirectorError, match=r"ro\.vip is not set"):
        Director(ro_config(vip=None), client, FakeBalancer(), log=RecordingLog())


# -- phases ----------------------------------------------------------------------------------


async def test_every_phase_change_is_logged_with_from_to_and_why(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    assert rig.director.phase is Phase.DIRECTING
    rig.director.on_transition(FROM_MASTER)
    await rig.step()
    assert rig.director.phase is Phase.STANDBY
    await rig.director.stop()
    assert rig.director.phase is Phase.STOPPED
    moves = [
        (event, kw["from"], kw["to"], kw["why"])
        for level, event, kw in rig.log.records
        if level == "info" and "from" in kw
    ]
    assert moves == [
        ("RO balancer cleared", "uncleared", "standby", "start-up"),
        ("RO director active", "standby", "warming", "the RO instance is MASTER"),
        ("RO director warmed up", "warming", "directing", "1 warm-up round(s) probed"),
        ("RO director inactive", "directing", "uncleared", "no longer the RO director"),
        ("RO balancer cleared", "uncleared", "standby", "no longer the RO director"),
        ("RO director stopped", "standby", "stopped", "shutdown"),
    ]


async def test_rise_one_directs_from_the_first_round(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, rise=1)
    await rig.step()
    rig.director.on_transition(TO_MASTER)
    await rig.step()
    assert rig.director.phase is Phase.DIRECTING
    assert rig.lb.current == service(*rs("p2", "p3"))
    assert "RO director warmed up" in rig.log.events("info")


async def test_a_failed_clear_stays_uncleared_and_is_retried(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    rig.lb.fail = "netlink: no"
    await rig.step()
    assert rig.director.phase is Phase.UNCLEARED and rig.director.status().clear_errors == 1
    rig.lb.fail = None
    await rig.step()
    assert rig.director.phase is Phase.STANDBY and rig.lb.clears == 1


# -- retune (a reload that changes only hot [ro] settings) -------------------------------------


async def test_a_retune_edits_the_running_service_and_keeps_earned_health(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    assert rig.lb.current == service(*rs("p2", "p3"))
    applies, clears = len(rig.lb.applied), rig.lb.clears
    new = replace(rig.director.config, scheduler="wrr", persistence_timeout=30, max_lag=MB16 // 16)
    rig.director.retune(new)
    await rig.step(0.1)
    # One apply with the new settings, straight from the running set: no clear, no warm-up,
    # both replicas still in (their health is kept), the new lag limit asked of each.
    want = replace(service(*rs("p2", "p3")), scheduler="wrr", persistence_timeout=30)
    assert rig.lb.applied[applies:] == [want] and rig.lb.clears == clears
    assert rig.director.phase is Phase.DIRECTING
    assert cluster.apis["p2"].queries[-1] == {"lag": str(MB16 // 16)}
    assert rig.director.status().scheduler == "wrr"
    retuned = [f for _lv, e, f in rig.log.records if e == "RO settings retuned"]
    assert retuned == [{"changed": ["max_lag", "persistence_timeout", "scheduler"], "active": True}]


async def test_a_retune_of_the_backend_policy_applies_at_the_next_round(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    await rig.become_director()
    rig.director.retune(replace(rig.director.config, include_primary=True, drain_timeout=0.0))
    cluster.apis["p3"].status = 503
    await rig.step()
    # The primary joins (include_primary) and p3 leaves without a drain (drain_timeout 0).
    assert rig.lb.current == service(*rs("p1", "p2"))


async def test_a_retune_refuses_what_a_running_director_cannot_take(
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    before = rig.director.config
    for change in ({"forwarding": "dr"}, {"port": 5433}, {"poll_interval": 0.2}):
        with pytest.raises(RetuneRefused, match="only the hot"):
            rig.director.retune(replace(before, **change))
    rig.lb.cannot = "scheduler 'lc' needs IPVS"
    with pytest.raises(RetuneRefused, match="running fake dataplane: scheduler 'lc' needs IPVS"):
        rig.director.retune(replace(before, scheduler="lc"))
    assert rig.director.config is before
    assert rig.director.policy.settings.rise == before.rise


def test_the_retunable_ro_settings_are_the_schema_rows_marked_hot() -> None:
    from pgvip.config.schema import SCHEMA
    from pgvip.daemon.ro.balancing import RETUNABLE

    assert {s.key for s in SCHEMA if s.section == "ro" and s.hot} == set(RETUNABLE)
