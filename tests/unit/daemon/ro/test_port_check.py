"""The port check, the port watch and the local watch (pgvip.daemon.ro.port_check) against real
listeners on loopback, and the Director taking a refusing backend out of rotation before its
next poll."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address
from typing import Any

import pytest

from pgvip.daemon.ro.director import Director
from pgvip.daemon.ro.port_check import check_port, watch_local, watch_ports
from pgvip.dataplane.balancer import RealServer, VirtualService
from pgvip.dataplane.tcp_listeners import ListenersError, listening_ports
from pgvip.patroni.client import PatroniClient
from pgvip.policy.backends import ProbeResult
from pgvip.vrrp.actions import Transition
from pgvip.vrrp.states import State
from tests.unit.daemon.ro_standins import (
    Cluster,
    FakeBalancer,
    RecordingLog,
    cluster,  # noqa: F401  (fixture)
    ro_config,
)

LOOPBACK = "127.0.0.1"
TO_MASTER = Transition(State.BACKUP, State.MASTER, "master down", 150)


class Listener:
    """A TCP listener on loopback that counts connections; `close()` makes the port refuse."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> Listener:
        async def handle(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            w.close()

        self.server = await asyncio.start_server(handle, LOOPBACK, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


def closed_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def wait_until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_listening_port_is_ok_and_sees_one_connection() -> None:
    srv = await Listener().start()
    try:
        r = await check_port("p2", LOOPBACK, srv.port, timeout=1.0, clock=time.monotonic)
        assert (r.ok, r.kind, r.definitive) == (True, "port", False)
        assert r.reason == f"port: {LOOPBACK}:{srv.port} accepts"
        await wait_until(lambda: srv.accepted == 1)
    finally:
        await srv.close()


async def test_a_refused_port_is_a_definite_no() -> None:
    port = closed_port()
    r = await check_port("p2", LOOPBACK, port, timeout=1.0, clock=lambda: 42.0)
    assert (r.ok, r.definitive, r.at, r.member) == (False, True, 42.0, "p2")
    assert r.reason == f"port: {LOOPBACK}:{port} refused (PostgreSQL not listening)"


async def test_an_ipv6_target_is_named_in_brackets() -> None:
    r = await check_port("p2", "::1", closed_port(), timeout=1.0, clock=time.monotonic)
    assert not r.ok and r.reason.startswith("port: [::1]:")


async def test_the_watch_reports_refusals_only_and_checks_only_current_targets() -> None:
    srv = await Listener().start()
    dead = closed_port()
    targets: list[tuple[str, str, int]] = [("p2", LOOPBACK, srv.port), ("p3", LOOPBACK, dead)]
    refused: list[ProbeResult] = []
    rounds = 0

    async def sleep(_s: float) -> None:
        nonlocal rounds, targets
        rounds += 1
        if rounds == 2:
            targets = []  # not directing any more: nothing is checked
        if rounds == 4:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    try:
        with pytest.raises(asyncio.CancelledError):
            await watch_ports(lambda: targets, refused.append, interval=0.01, timeout=1.0,
                              clock=time.monotonic, sleep=sleep)  # fmt: skip
    finally:
        await srv.close()
    assert [r.member for r in refused] == ["p3", "p3"]
    assert srv.accepted == 2


# -- the Director ----------------------------------------------------------------------------


@pytest.fixture
async def listeners(cluster: Cluster) -> AsyncIterator[dict[str, Listener]]:  # noqa: F811
    """p2 and p3 at 127.0.0.1, each with a listener on its own port."""
    out = {name: await Listener().start() for name in ("p2", "p3")}
    for name, srv in out.items():
        cluster.member(name).update(host=LOOPBACK, port=srv.port)
    try:
        yield out
    finally:
        for srv in out.values():
            await srv.close()


def svc(*ports: int, draining: tuple[int, ...] = ()) -> VirtualService:
    backends = [RealServer(IPv4Address(LOOPBACK), p, 1) for p in ports]
    backends += [RealServer(IPv4Address(LOOPBACK), p, 0) for p in draining]
    return VirtualService(IPv4Address("10.0.0.100"), 5432, tuple(backends))


async def test_a_backend_that_refuses_leaves_rotation_long_before_the_next_poll(
    cluster: Cluster,  # noqa: F811
    listeners: dict[str, Listener],
) -> None:
    """Patroni's /replica still says 200 (as it does for ~2 s after a SIGTERM) and, as a
    stopping Patroni's REST API does, hangs; but the port refuses: the watch takes p2 out at
    once on the last good /cluster, and wakes a round."""
    lb, log = FakeBalancer(), RecordingLog()
    p2, p3 = listeners["p2"].port, listeners["p3"].port
    async with PatroniClient(cluster.local.url, timeout=2.0) as client:
        director = Director(
            ro_config(poll_interval=5.0, port_check_interval=0.05), client, lb, log=log
        )
        heard: list[tuple[str, str, int, str]] = []
        director.on_refused.append(lambda *args: heard.append(args))
        task = asyncio.create_task(director.run())
        try:
            director.on_transition(TO_MASTER)
            await wait_until(lambda: lb.current == svc(*sorted([p2, p3])))
            polls = len(cluster.apis["p2"].queries)
            cluster.apis["p2"].delay = 3.0  # the round's /replica probe waits out its timeout
            await listeners["p2"].close()
            started = time.monotonic()
            await wait_until(lambda: lb.current == svc(p3, draining=(p2,)))
            assert time.monotonic() - started < 0.8  # poll_interval 5 s, probe_timeout 1 s
            assert "RO backend failed its port check: taking it out" in log.events("info")
            assert [h[:3] for h in heard] == [("p2", LOOPBACK, p2)] and "refused" in heard[0][3]
            await wait_until(lambda: len(cluster.apis["p2"].queries) == polls + 1)  # woken round
            p2_status = next(b for b in director.status().backends if b.member == "p2")
            assert "refused" in (p2_status.last_error or "")
            await director.stop()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_no_port_check_at_all_when_the_interval_is_zero(
    cluster: Cluster,  # noqa: F811
    listeners: dict[str, Listener],
) -> None:
    lb = FakeBalancer()
    async with PatroniClient(cluster.local.url, timeout=2.0) as client:
        director = Director(ro_config(poll_interval=0.05), client, lb, log=RecordingLog())
        task = asyncio.create_task(director.run())
        try:
            director.on_transition(TO_MASTER)
            await wait_until(lambda: lb.current is not None)
            await asyncio.sleep(0.2)
            assert listeners["p2"].accepted == listeners["p3"].accepted == 0
            await director.stop()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# -- this node's own PostgreSQL: the kernel's socket table, every 20 ms ----------------------


async def run_local_watch(
    targets: list[tuple[str, str, int]],
    listeners: Callable[[], list[Any]],
    *,
    rounds: int = 3,
) -> tuple[list[ProbeResult], RecordingLog, int]:
    """watch_local for `rounds` sleeps (or until it returns); (refusals, log, sleeps)."""
    refused: list[ProbeResult] = []
    log = RecordingLog()
    sleeps = 0

    async def sleep(_s: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps == rounds:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    with contextlib.suppress(asyncio.CancelledError):
        await watch_local(lambda: targets, refused.append, timeout=1.0, clock=time.monotonic,
                          log=log, listeners=listeners, sleep=sleep)  # fmt: skip
    return refused, log, sleeps


async def test_the_local_watch_connects_only_when_the_kernel_shows_no_listener() -> None:
    srv = await Listener().start()
    try:
        refused, log, sleeps = await run_local_watch([("p1", LOOPBACK, srv.port)],
                                                     listening_ports)  # fmt: skip
        assert (refused, sleeps, log.events("warning")) == ([], 3, [])
        assert srv.accepted == 0  # a listener was seen: no connection, no fork for PostgreSQL
    finally:
        await srv.close()


async def test_the_local_watch_reports_a_confirmed_refusal_every_round() -> None:
    dead = closed_port()
    refused, log, _ = await run_local_watch([("p1", LOOPBACK, dead)], listening_ports)
    assert [(r.member, r.definitive) for r in refused] == [("p1", True)] * 3
    assert "refused" in refused[0].reason and log.events("warning") == []


async def test_the_local_watch_gives_up_when_the_table_misses_a_listener_that_accepts() -> None:
    srv = await Listener().start()
    try:
        refused, log, sleeps = await run_local_watch([("p1", LOOPBACK, srv.port)], list)
        assert (refused, sleeps) == ([], 0)  # returned at once: the slow watch stays
        assert any("no listening socket seen" in e for e in log.events("warning"))
        await wait_until(lambda: srv.accepted == 1)
    finally:
        await srv.close()


async def test_the_local_watch_gives_up_when_the_table_cannot_be_read() -> None:
    def broken() -> list[Any]:
        raise ListenersError(13, "sock_diag: Permission denied")

    refused, log, sleeps = await run_local_watch([("p1", LOOPBACK, closed_port())], broken)
    assert (refused, sleeps) == ([], 0)
    assert any("cannot read the kernel's listening sockets" in e for e in log.events("warning"))


async def test_the_directors_own_postgresql_leaves_rotation_within_the_local_interval(
    cluster: Cluster,  # noqa: F811
    listeners: dict[str, Listener],
) -> None:
    """port_check_interval 5 s: only the local watch can see p2 (this node) stop in time,
    and it never connects to a PostgreSQL that listens."""
    lb, log = FakeBalancer(), RecordingLog()
    p2, p3 = listeners["p2"].port, listeners["p3"].port
    async with PatroniClient(cluster.local.url, timeout=2.0) as client:
        director = Director(
            ro_config(poll_interval=5.0, port_check_interval=5.0), client, lb, log=log
        )
        director.local_member = lambda: "p2"
        heard: list[tuple[str, str, int, str]] = []
        director.on_refused.append(lambda *args: heard.append(args))
        task = asyncio.create_task(director.run())
        try:
            director.on_transition(TO_MASTER)
            await wait_until(lambda: lb.current == svc(*sorted([p2, p3])))
            await asyncio.sleep(0.1)  # several local rounds while p2 listens
            accepted = listeners["p2"].accepted, listeners["p3"].accepted
            await listeners["p2"].close()
            started = time.monotonic()
            await wait_until(lambda: lb.current == svc(p3, draining=(p2,)))
            assert time.monotonic() - started < 0.5  # LOCAL_INTERVAL 0.02 s; the slow watch 5 s
            assert [h[:3] for h in heard] == [("p2", LOOPBACK, p2)]
            # p3 is connected to only by the round that the refusal wakes (its port probe)
            assert listeners["p3"].accepted - accepted[1] <= 1
            assert listeners["p2"].accepted == accepted[0]  # the local watch never connected
            await director.stop()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_backend_whose_connects_go_unanswered_twice_in_a_row_is_taken_out() -> None:
    """p2's host is gone (SYNs unanswered); p3 misses one connect only (a lost packet): only
    p2 is reported, once per UNANSWERED_LIMIT silent checks."""
    script = {"p2": ["silent"] * 5, "p3": ["silent", "ok", "silent", "ok", "ok"]}
    rounds = 0

    async def check(member: str, host: str, port: int, *, timeout: float,
                    clock: Callable[[], float]) -> ProbeResult:  # fmt: skip
        if script[member][rounds] == "ok":
            return ProbeResult(member, True, "port: accepts", 0.0, kind="port")
        return ProbeResult(member, False, f"port: {host}:{port} connect timeout after "
                           f"{timeout:g} s", 0.0, kind="port", timed_out=True)  # fmt: skip

    async def sleep(_s: float) -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 5:
            raise asyncio.CancelledError

    refused: list[ProbeResult] = []
    targets = [("p2", "10.0.0.2", 5432), ("p3", "10.0.0.3", 5432), ("p1", "10.0.0.1", 5432)]
    script["p1"] = ["silent"] * 5  # this node itself: a starved host, never "gone"
    with pytest.raises(asyncio.CancelledError):
        await watch_ports(lambda: targets, refused.append, interval=0.2, timeout=0.3,
                          clock=lambda: 7.0, sleep=sleep, check=check,
                          local=lambda: targets[2:])  # fmt: skip
    assert [r.member for r in refused] == ["p2", "p2"]  # after checks 2 and 4
    assert refused[0].definitive and not refused[0].ok
    assert refused[0].reason == (
        "port: 10.0.0.2:5432 no answer to 2 connects in a row (0.3 s each): host unreachable"
    )


@pytest.mark.parametrize(("waited", "counted"), [(0.3, True), (0.9, False)])
async def test_a_timeout_counts_as_unanswered_only_if_the_loop_was_not_starved(
    monkeypatch: pytest.MonkeyPatch, waited: float, counted: bool
) -> None:
    """A connect that never completes times out; the check's own clock says how long it
    really took. Far past the deadline means this process was starved (a loaded host, a
    TCG guest), and the answer may sit unread behind the timer: not a gone host."""

    async def never(*_a: object, **_k: object) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio, "open_connection", never)
    times = iter([100.0, 100.0 + waited, 100.0 + waited])
    r = await check_port("p2", "10.0.0.2", 5432, timeout=0.3, clock=lambda: next(times))
    assert not r.ok and not r.definitive
    assert r.timed_out is counted
    assert ("starved" in r.reason) is not counted
