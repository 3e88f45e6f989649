"""Tests for pgvip.lab.probe (and the pgvip.lab.attempts loop it runs): settings, and the
sampling loop's hard deadlines against loopback servers that never answer."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import AsyncIterator

import pytest

from pgvip.lab import attempts, probe
from pgvip.lab.probe import ProbeConfig
from pgvip.lab.samples import ProbeError

# -- settings ------------------------------------------------------------------


def test_defaults_follow_the_lab_layout() -> None:
    cfg = probe.config_from_args([])
    assert (cfg.rw, cfg.ro) == ("10.20.30.50", "10.20.30.49")
    assert cfg.patroni_urls == ()
    assert (cfg.interval, cfg.timeout) == (0.1, 1.0)
    assert (cfg.user, cfg.password, cfg.port) == ("postgres", "postgres", 5432)
    assert cfg.names["10.20.30.52"] == "p2"


def test_leader_urls_default_to_every_node() -> None:
    cfg = probe.config_from_args(["--subnet", "10.20.34.0/24", "--nodes", "2", "--leader"])
    assert cfg.patroni_urls == ("http://10.20.34.51:8008", "http://10.20.34.52:8008")
    assert cfg.rw == "10.20.34.50"
    explicit = probe.config_from_args(["--leader", "--patroni", "http://h:1", "--no-ro"])
    assert explicit.patroni_urls == ("http://h:1",)
    assert explicit.ro is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--interval", "0"], "--interval must be a positive"),
        (["--timeout", "nan"], "--timeout must be a positive"),
        (["--count", "0"], "--count must be at least 1"),
        (["--duration", "-1"], "--duration must be positive"),
        (["--nodes", "7"], "--nodes must be 2 to 5"),
        (["--subnet", "10.0.0.0/16"], "must be a /24"),
        (["--no-rw", "--no-ro"], "nothing to probe"),
    ],
)
def test_bad_settings_are_explained(argv: list[str], message: str) -> None:
    with pytest.raises(ProbeError, match=message):
        probe.config_from_args(argv)


def test_main_exits_2_on_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe.main(["--count", "0"]) == 2
    assert "probe: --count must be at least 1" in capsys.readouterr().err


# -- the loop, against loopback servers ----------------------------------------------------


@pytest.fixture
async def black_hole() -> AsyncIterator[int]:
    """A loopback TCP port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_hard_deadline_on_a_silent_server(black_hole: int) -> None:
    cfg = ProbeConfig(
        rw="127.0.0.1",
        ro="127.0.0.1",
        patroni_urls=(),
        interval=0.05,
        timeout=0.3,
        port=black_hole,
        count=6,
    )
    out = io.StringIO()
    started = time.monotonic()
    assert await probe.Probe(cfg, out).run() == 0
    elapsed = time.monotonic() - started
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["seq"] for x in lines] == list(range(6))
    for line in lines:
        assert line["rw_ok"] is False and line["rw_err"] == "timeout"
        assert line["ro_ok"] is False and line["ro_err"] == "timeout"
        # psycopg alone would have waited its 2 s connect_timeout.
        assert 250 <= line["rw_ms"] < 900
        assert line["leader_ok"] is None
    # Attempts overlap: six samples 50 ms apart, each waiting 0.3 s, take ~0.55 s, not 1.8 s.
    assert elapsed < 1.5
    times = [x["t"] for x in lines]
    # Samples keep the 50 ms cadence on average; one late wake-up on a loaded CI box
    # must not fail the test (the overlap itself is proven by `elapsed` above).
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    assert 0.03 < (times[-1] - times[0]) / (len(times) - 1) < 0.2


async def test_refused_and_no_leader_are_reported() -> None:
    port = _closed_port()
    cfg = ProbeConfig(
        rw="127.0.0.1",
        ro=None,
        patroni_urls=(f"http://127.0.0.1:{_closed_port()}",),
        interval=0.05,
        timeout=0.5,
        port=port,
        count=4,
    )
    out = io.StringIO()
    await probe.Probe(cfg, out).run()
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) == 4
    assert all(x["rw_err"].startswith("refused") for x in lines)
    assert all(x["ro_ok"] is None for x in lines)
    assert all(x["leader_ok"] is False and x["leader"] is None for x in lines)
    assert "no Patroni answered" in lines[-1]["leader_err"]


async def test_leader_watch_follows_cluster_answers() -> None:
    from aiohttp import web

    answers = [{"members": [{"name": "p2", "role": "leader", "host": "127.0.0.1"}]}]

    async def cluster(_request: web.Request) -> web.Response:
        return web.json_response(answers[-1])

    app = web.Application()
    app.router.add_get("/cluster", cluster)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        dead = f"http://127.0.0.1:{_closed_port()}"
        watch = attempts.LeaderWatch([dead, f"http://127.0.0.1:{port}"], 0.05, 1.0)
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await watch.poll(session)
            assert watch.leader == ("p2", "127.0.0.1")
            assert watch.error is None
            answers.append({"members": [{"name": "p1", "role": "replica", "host": "x"}]})
            await watch.poll(session)
            assert watch.leader is None
            assert watch.error is not None and watch.error.startswith("no_leader")
    finally:
        await runner.cleanup()


async def test_leader_watch_keeps_one_cluster_request_open_while_patroni_hangs() -> None:
    from aiohttp import web

    seen = {"asked": 0, "open": 0, "most": 0}
    hang = asyncio.Event()

    async def cluster(_request: web.Request) -> web.Response:
        seen["asked"] += 1
        seen["open"] += 1
        seen["most"] = max(seen["most"], seen["open"])
        try:
            await hang.wait()  # a Patroni whose DCS is down
        finally:
            seen["open"] -= 1
        return web.json_response({"members": [{"name": "p2", "role": "leader", "host": "h"}]})

    app = web.Application()
    app.router.add_get("/cluster", cluster)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        watch = attempts.LeaderWatch([f"http://127.0.0.1:{port}"], 0.05, 0.1)
        import aiohttp

        async with aiohttp.ClientSession() as session:
            for _ in range(4):
                await watch.poll(session)
                assert watch.leader is None and "still open" in (watch.error or "")
            assert seen == {"asked": 1, "open": 1, "most": 1}
            hang.set()
            await asyncio.sleep(0.1)
            await watch.poll(session)  # the late answer of the one request
            assert watch.leader == ("p2", "h") and seen["asked"] == 1
            await watch.poll(session)
            assert seen["asked"] == 2
    finally:
        await runner.cleanup()


async def test_stop_ends_the_loop_and_flushes_every_started_sample(black_hole: int) -> None:
    cfg = ProbeConfig(
        rw="127.0.0.1", ro=None, patroni_urls=(), interval=0.05, timeout=0.2, port=black_hole
    )
    out = io.StringIO()
    p = probe.Probe(cfg, out)
    task = asyncio.create_task(p.run())
    await asyncio.sleep(0.3)
    p.stop()
    await asyncio.wait_for(task, 2)
    seqs = [json.loads(x)["seq"] for x in out.getvalue().splitlines()]
    assert len(seqs) >= 3
    assert seqs == list(range(len(seqs)))


class _ClosedPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_closed_reader_stops_the_probe() -> None:
    cfg = ProbeConfig(
        rw="127.0.0.1", ro=None, patroni_urls=(), interval=0.05, timeout=0.2, port=_closed_port()
    )
    p = probe.Probe(cfg, _ClosedPipe())
    assert await asyncio.wait_for(p.run(), 3) == 0
    assert p.broken_pipe
