"""Stand-ins for the daemon tests: real aiohttp servers on 127.0.0.1 ephemeral ports playing the
local Patroni (/cluster, /patroni) and each member's REST API (/replica), a fake clock, a
recording logger and a fake load balancer (the dataplane is the one thing faked here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pgvip.config import RoConfig
from pgvip.dataplane.balancer import LoadBalancerError, VirtualService


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingLog:
    """Enough of a structlog logger: every call is kept as (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str, event: str, **kw: Any) -> None:
        self.records.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._log("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._log("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._log("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._log("error", event, **kw)

    def bind(self, **kw: Any) -> RecordingLog:
        return self

    def events(self, level: str | None = None) -> list[str]:
        return [e for lv, e, _ in self.records if level is None or lv == level]


class FakeBalancer:
    """A LoadBalancer that holds the service in memory and records every call."""

    name: ClassVar[str] = "fake"

    def __init__(self) -> None:
        self.current: VirtualService | None = None
        self.applied: list[VirtualService] = []
        self.clears = 0
        self.fail: str | None = None  # raise LoadBalancerError with this text
        self.delay = 0.0
        self.clear_delay = 0.0
        self.calls: list[str] = []
        self.cannot: str | None = None  # check() refuses with this text

    def check(self, scheduler: str, forwarding: str, persistence_timeout: int) -> None:
        if self.cannot:
            raise LoadBalancerError(self.cannot)

    async def apply(self, desired: VirtualService) -> bool:
        self.calls.append("apply")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise LoadBalancerError(self.fail)
        self.applied.append(desired)
        changed = desired != self.current
        self.current = desired
        return changed

    async def actual(self) -> VirtualService | None:
        return self.current

    async def clear(self) -> None:
        self.calls.append("clear")
        if self.clear_delay:
            await asyncio.sleep(self.clear_delay)
        if self.fail:
            raise LoadBalancerError(self.fail)
        self.clears += 1
        self.current = None


@dataclass
class MemberApi:
    """One member's Patroni REST API: /replica answers `status` after `delay` seconds."""

    status: int = 200
    delay: float = 0.0
    queries: list[dict[str, str]] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def api_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}/patroni"

    async def replica(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"role": "replica"}, status=self.status)


@dataclass
class LocalPatroni:
    """The local Patroni: /cluster from `members` (or a raw body), /patroni from role/state."""

    members: list[dict[str, Any]] = field(default_factory=list)
    raw: bytes | None = None
    cluster_status: int = 200
    role: str = "replica"
    state: str = "running"
    patroni_raw: bytes | None = None
    patroni_status: int = 200
    cluster_delay: float = 0.0  # a DCS that does not answer: /cluster hangs this long
    cluster_requests: int = 0
    cluster_open: int = 0  # /cluster requests being served right now
    cluster_open_max: int = 0
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def cluster(self, request: web.Request) -> web.Response:
        self.cluster_requests += 1
        self.cluster_open += 1
        self.cluster_open_max = max(self.cluster_open_max, self.cluster_open)
        try:
            if self.cluster_delay:
                await asyncio.sleep(self.cluster_delay)
        finally:
            self.cluster_open -= 1
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        body = {"members": self.members, "scope": "demo"}
        return web.json_response(body, status=self.cluster_status)

    async def patroni(self, request: web.Request) -> web.Response:
        if self.patroni_raw is not None:
            return web.Response(body=self.patroni_raw, content_type="application/json")
        body = {
            "state": self.state,
            "role": self.role,
            "timeline": 2,
            "patroni": {"name": "me", "version": "4.1.5"},
        }
        return web.json_response(body, status=self.patroni_status)


async def start(routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]]) -> TestServer:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    return srv


@dataclass
class Cluster:
    """A local Patroni plus one REST API per member; `member()` edits /cluster entries."""

    local: LocalPatroni
    apis: dict[str, MemberApi]

    def member(self, name: str) -> dict[str, Any]:
        for m in self.local.members:
            if m["name"] == name:
                return m
        raise KeyError(name)

    def remove(self, name: str) -> None:
        self.local.members = [m for m in self.local.members if m["name"] != name]

    def garbage(self, body: bytes) -> None:
        self.local.raw = body

    def heal(self) -> None:
        self.local.raw = None


HOSTS = {"p1": "10.0.0.11", "p2": "10.0.0.12", "p3": "10.0.0.13"}


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """p1 leader, p2 and p3 streaming replicas, each with its own /replica server."""
    apis = {name: MemberApi() for name in HOSTS}
    servers: list[TestServer] = []
    try:
        for api in apis.values():
            api.server = await start({"/replica": api.replica})
            servers.append(api.server)
        local = LocalPatroni()
        local.server = await start({"/cluster": local.cluster, "/patroni": local.patroni})
        servers.append(local.server)
        for name, host in HOSTS.items():
            local.members.append(
                {
                    "name": name,
                    "role": "leader" if name == "p1" else "replica",
                    "state": "running" if name == "p1" else "streaming",
                    "host": host,
                    "port": 5432,
                    "api_url": apis[name].api_url,
                    "timeline": 2,
                    **({} if name == "p1" else {"lag": 0}),
                }
            )
        yield Cluster(local, apis)
    finally:
        for srv in servers:
            await srv.close()


def ro_config(**changes: Any) -> RoConfig:
    fields: dict[str, Any] = {
        "vip": IPv4Interface("10.0.0.100/24"),
        "vrid": 51,
        "priority_replica": 150,
        "priority_leader": 50,
        "port": 5432,
        "max_lag": 16 * 1024**2,
        "probe_sql": False,
        "probe_timeout": 1.0,
        "rise": 2,
        "fall": 2,
        "drain_timeout": 10.0,
        "fallback": "primary",
        "include_primary": False,
        "dataplane": "nftables",
        "scheduler": "rr",
        "forwarding": "nat",
        "persistence_timeout": 0,
        "poll_interval": 1.0,
        "port_check_interval": 0.0,  # no real TCP connects from unit tests unless asked
    }
    return RoConfig(**(fields | changes))


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()
