"""A real StatusServer on 127.0.0.1 (ephemeral port), run in its own thread and event loop so
blocking clients (urllib, click's CliRunner, schemathesis) can call it from the test.

These tests use loopback only and need no root, so they are not marked `integration`.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pgvip.config import StatusConfig
from pgvip.status.metrics import Metrics
from pgvip.status.server import StatusServer
from tests.unit.status.samples import make_snapshot


def status_config(**over: Any) -> StatusConfig:
    values: dict[str, Any] = {
        "listen": ipaddress.ip_address("127.0.0.1"),
        "port": 0,
        "username": None,
        "password_file": None,
        "cert_file": None,
        "key_file": None,
    }
    values.update(over)
    return StatusConfig(**values)


class SnapshotSource:
    """What the daemon's snapshot builder would be: returns the current state, which the test
    changes (or makes fail) between requests."""

    def __init__(self, snapshot: Mapping[str, Any] | None = None) -> None:
        self.current: Any = copy.deepcopy(snapshot) if snapshot is not None else make_snapshot()
        self.error: Exception | None = None
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.current


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@dataclass
class Live:
    server: StatusServer
    source: SnapshotSource
    metrics: Metrics
    loop: LoopThread

    @property
    def url(self) -> str:
        return self.server.url


def start_live(
    loop: LoopThread,
    config: StatusConfig | None = None,
    *,
    health: Callable[[], str | None] | None = None,
    instances: tuple[str, ...] = ("rw", "ro"),
) -> Live:
    source = SnapshotSource()
    metrics = Metrics(instances)
    server = StatusServer(config or status_config(), source, metrics, health=health)
    loop.run(server.start())
    return Live(server, source, metrics, loop)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def servers(loop_thread: LoopThread) -> Iterator[Callable[..., Live]]:
    """Start StatusServers with any config; all are stopped at the end."""
    started: list[Live] = []

    def start(config: StatusConfig | None = None, **kwargs: Any) -> Live:
        live = start_live(loop_thread, config, **kwargs)
        started.append(live)
        return live

    try:
        yield start
    finally:
        for live in started:
            loop_thread.run(live.server.stop())


@pytest.fixture
def live(servers: Callable[..., Live]) -> Live:
    return servers()


@pytest.fixture
def plain_http(loop_thread: LoopThread) -> Iterator[str]:
    """A plain aiohttp server (no pgvip marker) answering JSON on every path, like another
    service's REST API would."""

    async def anything(request: web.Request) -> web.Response:
        return web.json_response({"state": "running", "role": "primary"})

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", anything)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, runner.addresses[0][1]

    runner, port = loop_thread.run(start())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop_thread.run(runner.cleanup())


@pytest.fixture
def not_http() -> Iterator[str]:
    """A TCP service that answers with bytes that are not HTTP (like PostgreSQL's port)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"E\x00\x00\x00\x10SFATAL\x00garbage\x00\x00")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        srv.close()


@pytest.fixture
def closed_port() -> str:
    """A URL on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=pgvip-test", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def http_get(url: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> Answer:
    request = urllib.request.Request(url, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers, exc.read())
