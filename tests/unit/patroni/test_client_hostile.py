"""PatroniClient (and the watch loop around it) against a hostile HTTP server on 127.0.0.1:
answers that drip, never end, are huge or are not HTTP. Each gets an UNKNOWN observation
with a specific cause within the timeout, memory stays bounded, and the loop keeps polling.
test_client.py covers the plain cases (slow handler, garbage line, truncated, oversized)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pgvip.daemon.patroni_watch import PatroniWatch
from pgvip.patroni.client import MAX_BODY, PatroniClient
from pgvip.patroni.verdict import PatroniResponseError, Verdict
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.vrrp.events import EligibilityChanged
from tests.unit.daemon.ro_standins import RecordingLog

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Hostile:
    """A TCP server whose answer to each request is a coroutine the test chooses."""

    def __init__(self) -> None:
        self.behaviour: Behaviour = _ok
        self.written = 0  # bytes the server managed to send, over all connections
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await self.behaviour(reader, _Counting(writer, self))
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client gave up on us: what the tests want
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


class _Counting:
    def __init__(self, writer: asyncio.StreamWriter, owner: Hostile) -> None:
        self._writer, self._owner = writer, owner

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        self._owner.written += len(data)

    async def drain(self) -> None:
        await self._writer.drain()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


async def _ok(reader: Any, writer: Any) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()


def _drip(data: bytes, every: float) -> Behaviour:
    async def behaviour(reader: Any, writer: Any) -> None:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)

    return behaviour


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    h = Hostile()
    await h.start()
    try:
        yield h
    finally:
        assert h.server is not None
        h.server.close()
        await h.server.wait_closed()


def _url(h: Hostile) -> str:
    assert h.server is not None
    return f"http://127.0.0.1:{h.server.sockets[0].getsockname()[1]}"


async def _primary(h: Hostile, timeout: float = 0.5) -> tuple[Any, float]:
    async with PatroniClient(_url(h), timeout=timeout) as client:
        started = time.monotonic()
        obs = await client.primary()
        return obs, time.monotonic() - started


async def test_headers_dripping_slower_than_the_timeout_are_a_timeout(hostile: Hostile) -> None:
    # Slowloris in reverse: every byte arrives in time for a per-read timeout, never in
    # time for the whole answer.
    hostile.behaviour = _drip(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0.05)
    obs, elapsed = await _primary(hostile, timeout=0.3)
    assert (obs.verdict, obs.cause) == (Verdict.UNKNOWN, "timeout")
    assert elapsed < 1.0


async def test_a_body_dripping_after_a_200_is_a_timeout_not_a_yes(hostile: Hostile) -> None:
    async def behaviour(reader: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await writer.drain()
        for _ in range(1000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    hostile.behaviour = behaviour
    obs, elapsed = await _primary(hostile, timeout=0.3)
    assert (obs.verdict, obs.cause) == (Verdict.UNKNOWN, "timeout")
    assert elapsed < 1.0


async def test_an_endless_body_is_cut_off_with_bounded_memory(hostile: Hostile) -> None:
    chunk = b"y" * 65536

    async def behaviour(reader: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:  # 1 GiB and more if nobody stops reading
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()

    hostile.behaviour = behaviour
    tracemalloc.start()
    try:
        obs, _ = await _primary(hostile, timeout=10.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (obs.verdict, obs.cause) == (Verdict.UNKNOWN, "invalid")
    assert f"larger than {MAX_BODY} bytes" in obs.reason
    # The client read a little over MAX_BODY and hung up: what the server got out is
    # MAX_BODY plus what the socket buffers held, and the client's peak a few MiB.
    assert hostile.written < MAX_BODY + (16 << 20), hostile.written
    assert peak < 8 * MAX_BODY, f"peak {peak} bytes while reading an endless body"


async def test_a_huge_header_is_invalid(hostile: Hostile) -> None:
    async def behaviour(reader: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Junk: " + b"z" * (1 << 20) + b"\r\n\r\n")
        await writer.drain()

    hostile.behaviour = behaviour
    obs, elapsed = await _primary(hostile, timeout=2.0)
    assert (obs.verdict, obs.cause) == (Verdict.UNKNOWN, "invalid")
    assert "127.0.0.1" in obs.reason
    assert elapsed < 2.0


async def test_endless_headers_are_invalid_or_time_out(hostile: Hostile) -> None:
    async def behaviour(reader: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(1 << 20):
            writer.write(b"X-%d: a\r\n" % i)
            await writer.drain()

    hostile.behaviour = behaviour
    obs, elapsed = await _primary(hostile, timeout=1.0)
    assert obs.verdict is Verdict.UNKNOWN
    assert obs.cause in ("invalid", "timeout")
    # The deadline is 1 s; an unbounded read would never end. 5 s leaves room for a loaded
    # CI machine (it took 2.7 s at load average 18).
    assert elapsed < 5.0


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 999999 Weird\r\n\r\n",
        b"HTTP/9.9 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x00\x05hello",  # a TLS record on a plain-HTTP URL
        b"\x00" * 64 + b"\r\n\r\n",
    ],
    ids=["status", "version", "negative-length", "huge-length", "bad-chunk", "tls", "nul"],
)
async def test_broken_http_is_never_a_yes(hostile: Hostile, reply: bytes) -> None:
    async def behaviour(reader: Any, writer: Any) -> None:
        writer.write(reply)
        await writer.drain()

    hostile.behaviour = behaviour
    obs, _ = await _primary(hostile, timeout=1.0)
    assert obs.verdict is Verdict.UNKNOWN
    assert obs.cause in ("invalid", "disconnected", "timeout"), obs


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"a":' * 100_000, b"\xff\xfe{}", b'{"role": "primary", "state": 1e999}'],
    ids=["deep-list", "deep-object", "bad-utf8", "inf"],
)
async def test_hostile_json_on_patroni_is_a_response_error(hostile: Hostile, body: bytes) -> None:
    async def behaviour(reader: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    hostile.behaviour = behaviour
    async with PatroniClient(_url(hostile), timeout=2.0) as client:
        with pytest.raises(PatroniResponseError):
            await client.patroni_status()


async def test_the_watch_loop_survives_every_kind_of_hostile_answer(hostile: Hostile) -> None:
    """The daemon's poll loop over the real client: each hostile answer is one UNKNOWN poll
    (NO for the 503), the task never dies, and eligibility follows the policy."""

    def reply(data: bytes) -> Behaviour:
        async def behaviour(reader: Any, writer: Any) -> None:
            writer.write(data)
            await writer.drain()

        return behaviour

    async def endless(reader: Any, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"10000\r\n" + b"y" * 65536 + b"\r\n")
            await writer.drain()

    async def hang(reader: Any, writer: Any) -> None:
        await asyncio.sleep(5)

    kinds: list[Behaviour] = [
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        reply(b"garbage\r\n\r\n"),
        endless,
        hang,
        reply(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort"),
        reply(b"[" * 50_000),
        reply(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
    ]
    served = 0

    async def rotating(reader: Any, writer: Any) -> None:
        nonlocal served
        behaviour = kinds[served % len(kinds)]
        served += 1
        await behaviour(reader, writer)

    hostile.behaviour = rotating
    fed: list[EligibilityChanged] = []
    log = RecordingLog()
    async with PatroniClient(_url(hostile), timeout=0.3) as client:
        watch = PatroniWatch(
            client,
            EligibilityPolicy(1, 3),
            poll=client.primary,
            interval=0.01,
            feed=fed.append,
            log=log,
        )
        task = asyncio.create_task(watch.run())
        try:
            deadline = time.monotonic() + 20
            while watch.polls < 3 * len(kinds) and time.monotonic() < deadline:
                assert not task.done(), task.exception()
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert watch.polls >= 3 * len(kinds), f"only {watch.polls} polls"
    causes = set(watch.errors)
    assert {"invalid", "timeout"} <= causes, watch.errors
    assert fed and fed[0].eligible, "the first answer was a good 200"
    assert all(isinstance(e, EligibilityChanged) for e in fed)
