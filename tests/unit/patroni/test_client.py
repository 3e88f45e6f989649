"""PatroniClient against a real in-process aiohttp server on 127.0.0.1 (no mocks).

Covers the verdict and cause of every kind of answer, basic auth, TLS (server and client
certificates made with the openssl CLI), keep-alive reuse, and the JSON endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pgvip.patroni.client import MAX_BODY, PatroniClient, PatroniClientError
from pgvip.patroni.verdict import PatroniResponseError, PatroniUnavailable, Verdict

PATRONI_JSON = {
    "state": "running",
    "role": "primary",
    "timeline": 3,
    "dcs_last_seen": 1793000000,
    "patroni": {"version": "4.1.5", "scope": "demo", "name": "p1"},
}


@dataclass
class FakePatroni:
    """Per-test knobs of the in-process server: what each path answers."""

    statuses: dict[str, int] = field(default_factory=lambda: {"/primary": 200, "/replica": 503})
    patroni: object = field(default_factory=lambda: dict(PATRONI_JSON))
    cluster: object = field(default_factory=lambda: {"members": [], "scope": "demo"})
    raw_body: bytes | None = None  # overrides the JSON body of /patroni and /cluster
    delay: float = 0.0
    huge: bool = False  # answer with a body bigger than the client accepts
    auth: tuple[str, str] | None = None
    peers: list[tuple[str, int]] = field(default_factory=list)
    queries: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.peers.append(request.transport.get_extra_info("peername")[:2])  # type: ignore[union-attr]
        self.queries.append((request.path, dict(request.query)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.auth is not None:
            user, password = self.auth
            want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if request.headers.get("Authorization") != want:
                return web.Response(status=401, text="no auth")
        if request.path == "/patroni":
            return self._json(self.patroni)
        if request.path == "/cluster":
            return self._json(self.cluster)
        if self.huge:
            return web.Response(body=b"x" * (MAX_BODY + 10))
        status = self.statuses.get(request.path, 404)
        # Patroni sends a JSON body with health answers too; the client must ignore it.
        return web.json_response({"role": "garbage-not-trusted"}, status=status)

    def _json(self, obj: object) -> web.Response:
        if self.raw_body is not None:
            return web.Response(body=self.raw_body, content_type="application/json")
        return web.json_response(obj)


@pytest.fixture
def fake() -> FakePatroni:
    return FakePatroni()


@pytest.fixture
async def server(fake: FakePatroni) -> AsyncIterator[TestServer]:
    srv = TestServer(fake.app(), host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


def url_of(srv: TestServer, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.port}"


class FakeClock:
    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


# -- health verdicts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict", "cause"),
    [
        (200, Verdict.YES, "ok"),
        (503, Verdict.NO, "http_503"),
        (500, Verdict.UNKNOWN, "http_500"),
        (401, Verdict.UNKNOWN, "auth"),
        (403, Verdict.UNKNOWN, "auth"),
    ],
)
async def test_primary_verdict_from_status_only(
    fake: FakePatroni, server: TestServer, status: int, verdict: Verdict, cause: str
) -> None:
    fake.statuses["/primary"] = status
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        observation = await client.primary()
    assert observation.verdict is verdict
    assert observation.cause == cause
    assert observation.reason.startswith(f"/primary {status}")


async def test_observation_uses_the_given_clock(server: TestServer) -> None:
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        observation = await client.primary(FakeClock(100.0, 100.25))
    assert observation.at == 100.25
    assert observation.latency == pytest.approx(0.25)
    assert observation.failsafe_active is None  # /patroni never asked


async def test_replica_passes_lag_through(fake: FakePatroni, server: TestServer) -> None:
    fake.statuses["/replica"] = 200
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        assert (await client.replica("1MB")).verdict is Verdict.YES
        fake.statuses["/replica"] = 503
        no = await client.replica(16777216)
        assert no.verdict is Verdict.NO and no.reason == "/replica 503"
        await client.replica()
    assert fake.queries == [
        ("/replica", {"lag": "1MB"}),
        ("/replica", {"lag": "16777216"}),
        ("/replica", {}),
    ]


async def test_member_replica_strips_patroni_from_api_url(
    fake: FakePatroni, server: TestServer
) -> None:
    fake.statuses["/replica"] = 200
    async with PatroniClient("http://127.0.0.1:1", timeout=2.0) as client:
        observation = await client.member_replica(f"{url_of(server)}/patroni", "1MB")
    assert observation.verdict is Verdict.YES
    assert observation.reason == f"127.0.0.1:{server.port}/replica 200"
    assert fake.queries == [("/replica", {"lag": "1MB"})]


@pytest.mark.parametrize("api_url", ["not a url", "ftp://db1/patroni", "/patroni", ""])
async def test_member_replica_with_garbage_api_url_is_unknown_invalid(api_url: str) -> None:
    async with PatroniClient("http://127.0.0.1:1", timeout=2.0) as client:
        observation = await client.member_replica(api_url, "1MB")
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "invalid"
    assert "api_url" in observation.reason


# -- failures -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_closed_port_is_refused() -> None:
    port = free_port()
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        observation = await client.primary()
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "refused"
    assert observation.reason == f"connect refused: 127.0.0.1:{port}/primary"


async def test_slow_answer_is_a_timeout(fake: FakePatroni, server: TestServer) -> None:
    fake.delay = 2.0
    async with PatroniClient(url_of(server), timeout=0.2) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        observation = await client.primary()
        elapsed = loop.time() - started
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "timeout"
    assert elapsed < 1.5
    assert observation.latency == pytest.approx(elapsed, abs=0.1)


RawServer = Callable[[bytes | None], Awaitable[int]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServer]:
    """Start TCP servers that answer every request with fixed bytes (None: close at once)."""
    servers: list[asyncio.Server] = []

    async def start(reply: bytes | None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
            finally:
                writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    try:
        yield start
    finally:
        for srv in servers:
            srv.close()
            await srv.wait_closed()


@pytest.mark.parametrize(("status", "verdict"), [(200, Verdict.YES), (503, Verdict.NO)])
async def test_patroni_style_http10_answer_without_length(
    raw_server: RawServer, status: int, verdict: Verdict
) -> None:
    # Exactly what Patroni 4's _write_status_code_only sends, then it closes the connection.
    port = await raw_server(f"HTTP/1.0 {status} OK\r\n\r\n".encode())
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        first, second = await client.primary(), await client.primary()
    assert (first.verdict, second.verdict) == (verdict, verdict)


async def test_garbage_instead_of_http_is_invalid(raw_server: RawServer) -> None:
    port = await raw_server(b"HELLO, I AM NOT HTTP\r\n\r\n")
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        observation = await client.primary()
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "invalid"
    assert f"127.0.0.1:{port}/primary" in observation.reason


async def test_connection_closed_without_answer_is_disconnected(raw_server: RawServer) -> None:
    port = await raw_server(None)
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        observation = await client.primary()
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "disconnected"


async def test_truncated_body_is_invalid(raw_server: RawServer) -> None:
    port = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        observation = await client.primary()
    # Even a 200 status does not count when the answer is cut short.
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "invalid"


async def test_oversized_body_is_invalid(fake: FakePatroni, server: TestServer) -> None:
    fake.huge = True
    async with PatroniClient(url_of(server), timeout=5.0) as client:
        observation = await client.primary()
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "invalid"
    assert "larger than" in observation.reason


# -- keep-alive ---------------------------------------------------------------------------


async def test_one_connection_is_reused_across_polls(fake: FakePatroni, server: TestServer) -> None:
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        for status in (200, 503, 500, 200):
            fake.statuses["/primary"] = status
            await client.primary()
        await client.patroni_status()
        await client.replica("1MB")
    assert len(fake.peers) == 6
    assert len(set(fake.peers)) == 1, fake.peers


# -- basic auth ----------------------------------------------------------------------------


async def test_basic_auth(fake: FakePatroni, server: TestServer) -> None:
    fake.auth = ("pgvip", "s3cret")
    async with PatroniClient(url_of(server), timeout=2.0, username="pgvip", password="s3cret") as c:
        assert (await c.primary()).verdict is Verdict.YES
    async with PatroniClient(url_of(server), timeout=2.0, username="pgvip", password="wrong") as c:
        wrong = await c.primary()
    assert (wrong.verdict, wrong.cause) == (Verdict.UNKNOWN, "auth")
    async with PatroniClient(url_of(server), timeout=2.0) as c:
        anonymous = await c.primary()
    assert anonymous.cause == "auth"


# -- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path  # the server's self-signed certificate doubles as the CA
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl_self_signed(dir: Path, name: str, cn: str, san: str) -> tuple[Path, Path]:
    cert, key = dir / f"{name}.pem", dir / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}",
            "-addext", f"subjectAltName={san}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    server_cert, server_key = _openssl_self_signed(d, "server", "127.0.0.1", "IP:127.0.0.1")
    client_cert, client_key = _openssl_self_signed(d, "client", "pgvip", "DNS:pgvip")
    return Certs(server_cert, server_key, client_cert, client_key)


@contextlib.asynccontextmanager
async def tls_server(
    fake: FakePatroni, certs: Certs, *, require_client_cert: bool
) -> AsyncIterator[TestServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.ca, certs.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.client_cert)
    srv = TestServer(fake.app(), host="127.0.0.1", scheme="https")
    await srv.start_server(ssl=ctx)
    try:
        yield srv
    finally:
        await srv.close()


async def test_tls_with_the_right_ca(fake: FakePatroni, certs: Certs) -> None:
    async with tls_server(fake, certs, require_client_cert=False) as srv:
        client = PatroniClient(url_of(srv, "https"), timeout=2.0, ca_file=str(certs.ca))
        async with client:
            assert (await client.primary()).verdict is Verdict.YES
            assert (await client.patroni_status()).name == "p1"


async def test_tls_self_signed_without_ca_is_a_tls_error(fake: FakePatroni, certs: Certs) -> None:
    async with (
        tls_server(fake, certs, require_client_cert=False) as srv,
        PatroniClient(url_of(srv, "https"), timeout=2.0) as c,
    ):
        observation = await c.primary()
    assert observation.verdict is Verdict.UNKNOWN
    assert observation.cause == "tls"
    assert "certificate" in observation.reason


async def test_tls_client_certificate(fake: FakePatroni, certs: Certs) -> None:
    async with tls_server(fake, certs, require_client_cert=True) as srv:
        url = url_of(srv, "https")
        async with PatroniClient(
            url,
            timeout=2.0,
            ca_file=str(certs.ca),
            cert_file=str(certs.client_cert),
            key_file=str(certs.client_key),
        ) as c:
            assert (await c.primary()).verdict is Verdict.YES
        async with PatroniClient(url, timeout=2.0, ca_file=str(certs.ca)) as c:
            refused = await c.primary()
    # TLS 1.3 reports a missing client certificate after the handshake, as an alert or a reset.
    assert refused.verdict is Verdict.UNKNOWN
    assert refused.cause in {"tls", "disconnected"}


async def test_unreadable_tls_files_fail_at_start(tmp_path: Path) -> None:
    client = PatroniClient(
        "https://127.0.0.1:1", timeout=1.0, ca_file=str(tmp_path / "missing-ca.pem")
    )
    with pytest.raises(PatroniClientError, match="cannot load Patroni TLS files"):
        async with client:
            pass


# -- JSON endpoints ---------------------------------------------------------------------


async def test_patroni_status_and_failsafe_flag_reach_observations(
    fake: FakePatroni, server: TestServer
) -> None:
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        status = await client.patroni_status()
        assert (status.role, status.state, status.timeline, status.name) == (
            "primary",
            "running",
            3,
            "p1",
        )
        assert client.failsafe_active is False  # key absent: not active
        assert (await client.primary()).failsafe_active is False
        fake.patroni = dict(PATRONI_JSON, failsafe_mode_is_active=True)
        await client.patroni_status()
        assert (await client.primary()).failsafe_active is True
        assert client.last_status is not None and client.last_status.failsafe_mode_is_active


async def test_patroni_status_garbage_raises_response_error(
    fake: FakePatroni, server: TestServer
) -> None:
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        fake.raw_body = b"<html>not json</html>"
        with pytest.raises(PatroniResponseError, match="^/patroni: body is not JSON"):
            await client.patroni_status()
        fake.raw_body = None
        fake.patroni = {"role": ["primary"], "state": "running"}
        with pytest.raises(PatroniResponseError, match="'role' must be str"):
            await client.patroni_status()
        assert client.failsafe_active is None  # nothing good was ever read


async def test_patroni_status_non_http_is_response_error(raw_server: RawServer) -> None:
    port = await raw_server(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        with pytest.raises(PatroniResponseError, match="^/patroni: invalid response"):
            await client.patroni_status()


async def test_patroni_status_unavailable(fake: FakePatroni, server: TestServer) -> None:
    fake.auth = ("pgvip", "x")
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        with pytest.raises(PatroniUnavailable) as info:
            await client.patroni_status()
    assert info.value.cause == "auth"
    assert "expected 200" in info.value.reason
    port = free_port()
    async with PatroniClient(f"http://127.0.0.1:{port}", timeout=2.0) as client:
        with pytest.raises(PatroniUnavailable) as info:
            await client.patroni_status()
    assert info.value.cause == "refused"
    assert str(info.value) == f"connect refused: 127.0.0.1:{port}/patroni"


async def test_cluster_returns_raw_json(fake: FakePatroni, server: TestServer) -> None:
    fake.cluster = {
        "members": [
            {"name": "p1", "role": "leader", "api_url": "http://10.20.30.51:8008/patroni"},
            {"name": "p2", "role": "replica", "lag": 0},
        ],
        "scope": "demo",
    }
    async with PatroniClient(url_of(server), timeout=2.0) as client:
        assert await client.cluster() == fake.cluster
        fake.cluster = ["not", "an", "object"]
        with pytest.raises(PatroniResponseError, match="^/cluster: expected a JSON object"):
            await client.cluster()


# -- misuse -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs", "message"),
    [
        ("127.0.0.1:8008", {}, "must be http"),
        ("ftp://127.0.0.1:8008", {}, "must be http"),
        ("http://u:p@127.0.0.1:8008", {}, "must not contain credentials"),
        ("http://127.0.0.1:8008", {"timeout": 0}, "timeout must be > 0"),
        ("http://127.0.0.1:8008", {"key_file": "k.pem"}, "key_file needs cert_file"),
    ],
)
def test_bad_construction_is_rejected(url: str, kwargs: dict, message: str) -> None:
    kwargs = {"timeout": 1.0, **kwargs}
    with pytest.raises(PatroniClientError, match=message):
        PatroniClient(url, **kwargs)


async def test_use_outside_async_with_is_an_error() -> None:
    client = PatroniClient("http://127.0.0.1:8008", timeout=1.0)
    with pytest.raises(PatroniClientError, match="outside 'async with'"):
        await client.primary()
