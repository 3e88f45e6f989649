"""Tests for pgvip.lab.probe: settings, error labels, the line format, gap analysis, and the
sampling loop's hard deadlines against loopback servers that never answer."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from pgvip.lab import probe
from pgvip.lab.probe import Gap, ProbeConfig, ProbeError

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


# -- pure parts ------------------------------------------------------------------


def test_classify_error() -> None:
    assert probe.classify_error(TimeoutError()) == "timeout"
    ro = psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    assert probe.classify_error(ro).startswith("read_only: cannot execute INSERT")
    refused = psycopg.OperationalError(
        'connection failed: connection to server at "10.20.30.50", port 5432 failed: '
        "Connection refused\n\tIs the server running on that host?"
    )
    label = probe.classify_error(refused)
    assert label.startswith("refused: connection failed")
    assert "\n" not in label and "\t" not in label
    assert probe.classify_error(OSError("No route to host")).startswith("unreachable")

    class Generic08006(Exception):
        sqlstate = "08006"

    assert probe.classify_error(Generic08006("... failed: No route to host")).startswith(
        "unreachable: "
    )
    assert probe.classify_error(Generic08006("server went away")).startswith("connection: ")
    long = probe.classify_error(RuntimeError("x" * 500))
    assert long.startswith("RuntimeError: ") and len(long) <= len("RuntimeError: ") + 120


def test_leader_from_cluster() -> None:
    doc = {
        "members": [
            {"name": "p1", "role": "replica", "host": "10.20.30.51", "state": "streaming"},
            {"name": "p2", "role": "leader", "host": "10.20.30.52", "state": "running"},
        ]
    }
    assert probe.leader_from_cluster(doc) == ("p2", "10.20.30.52")
    assert probe.leader_from_cluster({"members": [doc["members"][0]]}) is None
    assert probe.leader_from_cluster({"members": [{"role": "leader"}]}) is None
    assert probe.leader_from_cluster("garbage") is None
    assert probe.leader_from_cluster({"members": None}) is None


def test_format_and_parse_line() -> None:
    sample = {"seq": 3, "t": 12.5, "rw_ok": False, "rw_err": 'a "b"\nc', "ro_ok": None}
    line = probe.format_sample(sample)
    assert "\n" not in line
    assert line.startswith('{"seq":3,"t":12.5,"rw_ok":false,')
    assert probe.parse_line(line) == sample
    assert probe.parse_line("not json") is None
    assert probe.parse_line('{"seq": 1}') is None
    assert probe.parse_line("[1, 2]") is None


def _samples(pattern: str, *, start: float = 100.0, step: float = 0.1) -> list[dict[str, Any]]:
    """'o' ok, 'x' failed, '-' not probed: one sample per character."""
    values = {"o": True, "x": False, "-": None}
    return [
        {"seq": i, "t": round(start + i * step, 3), "rw_ok": values[c]}
        for i, c in enumerate(pattern)
    ]


def test_gaps_measure_from_last_ok_to_first_ok() -> None:
    rows = _samples("ooxxxoo-oxo")
    found = probe.gaps(list(reversed(rows)), "rw")
    assert found == [
        Gap("rw", last_ok=100.1, first_fail=100.2, first_ok=100.5, failures=3),
        Gap("rw", last_ok=100.8, first_fail=100.9, first_ok=101.0, failures=1),
    ]
    assert found[0].duration == pytest.approx(0.4)
    assert probe.longest_gap(found) == pytest.approx(0.4)
    assert probe.longest_gap([]) == 0.0


def test_gap_that_never_recovers() -> None:
    (gap,) = probe.gaps(_samples("ooxx"), "rw")
    assert not gap.recovered and gap.duration is None and gap.failures == 2
    assert probe.longest_gap([gap]) is None


def test_gap_without_a_success_before() -> None:
    (gap,) = probe.gaps(_samples("xxo"), "rw")
    assert gap.last_ok is None
    assert gap.duration == pytest.approx(0.2)


def test_gaps_window_keeps_an_outage_that_straddles_since() -> None:
    rows = _samples("ooxxxooxo")
    # since = 100.3 falls inside the first outage: it still starts at the last ok, 100.1.
    found = probe.gaps(rows, "rw", since=100.3, until=100.7)
    assert found == [Gap("rw", last_ok=100.1, first_fail=100.2, first_ok=100.5, failures=3)]
    assert probe.gaps(rows, "rw", since=100.6) == [
        Gap("rw", last_ok=100.6, first_fail=100.7, first_ok=100.8, failures=1)
    ]
    with pytest.raises(ProbeError, match="unknown probe target 'rx'"):
        probe.gaps(rows, "rx")


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
        watch = probe.LeaderWatch([dead, f"http://127.0.0.1:{port}"], 0.05, 1.0)
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
