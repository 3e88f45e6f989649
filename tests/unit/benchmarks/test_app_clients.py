"""The application-model clients (pgvip/lab/app_clients.py) and their analysis, without a
database: fake connect/statement coroutines stand in for psycopg."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks import analysis
from benchmarks.client import ClientError, config_from_args
from pgvip.lab.app_clients import HeldConnection, NoTarget, Paced


class FakeConn:
    def __init__(self, n: int) -> None:
        self.n, self.closed = n, False

    async def close(self) -> None:
        self.closed = True


class FakeServer:
    """connect() hands out numbered connections; `hang` makes a connect never finish (a lost
    SYN under libpq's defaults), `refuse` makes it fail at once."""

    def __init__(self) -> None:
        self.conns: list[FakeConn] = []
        self.targets: list[tuple[str, int]] = []
        self.libpq_timeouts: list[float | None] = []
        self.hang = self.refuse = self.fail_statement = False

    async def connect(self, host: str, port: int, libpq_timeout: float | None) -> FakeConn:
        self.targets.append((host, port))
        self.libpq_timeouts.append(libpq_timeout)
        if self.refuse:
            raise ConnectionRefusedError("connection refused")
        if self.hang:
            await asyncio.sleep(3600)
        conn = FakeConn(len(self.conns))
        self.conns.append(conn)
        return conn

    async def statement(self, conn: FakeConn) -> str | None:
        if self.fail_statement:
            raise ConnectionResetError("connection reset by peer")
        return f"node{conn.n}"


def held(server: FakeServer, lines: list[dict[str, Any]], **kw: Any) -> HeldConnection:
    kw.setdefault("deadline", 0.05)
    kw.setdefault("interval", 0.01)
    return HeldConnection(
        "app_rw", lambda: ("10.0.0.1", 5432), server.connect, server.statement,
        emit=lines.append, **kw,
    )  # fmt: skip


async def test_a_held_connection_is_reused_until_an_error_then_reconnects_at_once() -> None:
    server, lines = FakeServer(), []
    c = held(server, lines)
    assert await c.attempt() == "node0"
    assert await c.attempt() == "node0"  # the same connection, no new connect
    server.fail_statement = True
    with pytest.raises(ConnectionResetError):
        await c.attempt()
    assert server.conns[0].closed and c.conn is None
    server.fail_statement = False
    assert await c.attempt() == "node1"
    assert len(server.targets) == 2


async def test_the_connect_deadline_is_ours_and_libpq_gets_a_backstop() -> None:
    server, lines = FakeServer(), []
    server.hang = True
    c = held(server, lines, deadline=0.05)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await c.attempt()
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert server.libpq_timeouts == [2]  # libpq rounds anything below 2 s up to 2 s


async def test_libpq_defaults_pass_no_connect_timeout() -> None:
    server, lines = FakeServer(), []
    c = held(server, lines, deadline=None)
    assert await c.attempt() == "node0"
    assert server.libpq_timeouts == [None]


async def test_a_fresh_client_connects_per_attempt_and_closes() -> None:
    server, lines = FakeServer(), []
    c = held(server, lines, fresh=True)
    assert [await c.attempt() for _ in range(3)] == ["node0", "node1", "node2"]
    assert all(conn.closed for conn in server.conns) and c.conn is None


async def test_no_target_is_a_labelled_failure() -> None:
    server, lines = FakeServer(), []
    c = HeldConnection("app_leader", lambda: None, server.connect, server.statement,
                       interval=0.01, emit=lines.append, deadline=0.05)  # fmt: skip
    with pytest.raises(NoTarget):
        await c.attempt()
    assert str(NoTarget()).startswith("no_leader:") and server.targets == []


class Slow(Paced):
    """Each attempt takes `took` seconds of a fake clock; fails on the attempts listed."""

    def __init__(self, now: list[float], took: float, fail: set[int], **kw: Any) -> None:
        super().__init__("app_rw", **kw)
        self.now, self.took, self.fail = now, took, fail

    async def attempt(self) -> str | None:
        n = self.seq
        self.now[0] += self.took
        if n in self.fail:
            raise ConnectionRefusedError("connection refused")
        return "p1"


async def test_paced_runs_one_at_a_time_and_never_bursts_after_an_overrun() -> None:
    """Attempts that take 3 intervals each are followed by the next at once, not by a burst
    of the two that 'should' have run meanwhile."""
    now = [100.0]
    lines: list[dict[str, Any]] = []
    stop = asyncio.Event()

    def emit(line: dict[str, Any]) -> None:
        lines.append(line)
        if len(lines) == 5:
            stop.set()

    c = Slow(now, took=0.03, fail={2}, interval=0.01, emit=emit)
    await asyncio.wait_for(c.run(stop, clock=lambda: now[0]), 5)
    starts = [line["t"] for line in lines]
    assert starts == pytest.approx([100.0, 100.03, 100.06, 100.09, 100.12])
    assert [line["app_rw_ok"] for line in lines] == [True, True, False, True, True]
    assert lines[2]["app_rw_err"].startswith("refused") and lines[2]["app_rw_node"] is None
    assert all(line["app_rw_ms"] == pytest.approx(30.0) for line in lines)


def test_client_cli_rejects_an_unknown_app_model() -> None:
    with pytest.raises(ClientError, match="unknown --app-models"):
        config_from_args(["--write", "rw=10.0.0.1:5432", "--app-models", "persistent,bogus"])
    cfg = config_from_args(["--write", "rw=10.0.0.1:5432", "--app-models", "libpq,pool",
                            "--read-app"])  # fmt: skip
    assert cfg.app_models == ("libpq", "pool") and cfg.read_app


def _samples(path: str, fails: dict[float, str], t0: float, t1: float) -> list[dict[str, Any]]:
    out, t, seq = [], t0, 0
    while t < t1:
        key = round(t, 2)
        err = fails.get(key)
        out.append({"seq": seq, "t": key, f"{path}_ok": err is None, f"{path}_err": err,
                    f"{path}_ms": 1000.0 if err == "timeout" else 2.0})  # fmt: skip
        t += 0.02
        seq += 1
    return out


def test_failure_summary_counts_alternating_failures_over_their_whole_window() -> None:
    fails = {10.0: "refused: x", 10.04: "refused: x", 10.5: "timeout", 11.5: "refused: x"}
    s = analysis.failure_summary(_samples("app_ro", fails, 9.0, 13.0), "app_ro", 9.5, 13.0)
    assert s == {"count": 4, "kinds": {"refused": 3, "timeout": 1}, "window": 1.5,
                 "max_attempt_ms": 1000.0}  # fmt: skip


def test_app_record_reports_the_extra_gap_over_the_direct_twin() -> None:
    through = _samples("app_rw", {round(10.0 + 0.02 * i, 2): "timeout" for i in range(40)},
                       5.0, 14.0)  # fmt: skip
    direct = _samples("app_leader", {round(10.0 + 0.02 * i, 2): "refused: x" for i in range(10)},
                      5.0, 14.0)  # fmt: skip
    rec = analysis.app_record(through + direct, 10.0, 14.0, since=5.0)
    assert set(rec) == {"persistent"}  # only models present in the samples
    a = rec["persistent"]
    assert a["valid"] and a["extra"] == pytest.approx(0.6, abs=0.021)
    assert a["failures"]["count"] == 40 and a["direct_failures"]["count"] == 10
    assert a["failures"]["kinds"] == {"timeout": 40}
