"""The status API with TLS and basic auth on, against clients that should get nothing:
no or wrong credentials, a client that does not trust the certificate, one that offers a
certificate of its own, plain HTTP on the TLS port, idle and half-open connections, and
oversized headers. Each is refused with a clear answer, and the server keeps serving."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pgvip.status.client import StatusClientError, fetch_status
from tests.integration.status.conftest import Live, status_config

USER, PASSWORD = "ops", "s3cret"


def _auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def secured(
    servers: Callable[..., Live], self_signed: tuple[str, str], tmp_path: Path
) -> tuple[Live, str]:
    cert, key = self_signed
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    live = servers(
        status_config(username=USER, password_file=str(pw), cert_file=cert, key_file=key)
    )
    assert live.url.startswith("https://")
    return live, cert


def _get(
    live: Live, cafile: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    host, port = live.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _still_serves(live: Live, cafile: str) -> None:
    status, body = _get(live, cafile, "/status", _auth())
    assert status == 200 and json.loads(body)["schema"] == 1


def test_no_or_wrong_credentials_over_tls_are_401(secured: tuple[Live, str]) -> None:
    live, cert = secured
    for path in ("/status", "/metrics"):
        for headers in (
            {},
            _auth(password="wrong"),
            _auth(user="root"),
            _auth(password=PASSWORD + "x"),
            _auth(password=""),
            {"Authorization": "Basic " + "A" * 4000},
            {"Authorization": "Digest username=ops"},
        ):
            status, body = _get(live, cert, path, headers)
            assert status == 401, (path, headers, status)
            assert json.loads(body)["status"] == 401
            assert PASSWORD not in body.decode()
    assert _get(live, cert, "/health")[0] == 200  # liveness needs no credentials
    _still_serves(live, cert)


def test_many_wrong_passwords_then_the_right_one(secured: tuple[Live, str]) -> None:
    live, cert = secured
    for i in range(200):
        assert _get(live, cert, "/status", _auth(password=f"guess{i}"))[0] == 401
    _still_serves(live, cert)


def test_a_client_that_does_not_trust_the_certificate_gets_nothing(
    secured: tuple[Live, str],
) -> None:
    live, cert = secured
    with pytest.raises(StatusClientError) as err:
        fetch_status(live.url, username=USER, password=PASSWORD)  # system CAs only
    assert err.value.kind == "tls"
    assert "TLS error" in str(err.value)
    # A client pinned to another certificate fails the same way.
    with pytest.raises(StatusClientError, match="TLS error"):
        fetch_status(live.url, username=USER, password=PASSWORD, cafile=_other_cert(cert))
    _still_serves(live, cert)


def _other_cert(cert: str) -> str:
    other = Path(cert).with_name("other.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=someone-else", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(other.with_suffix(".key")), "-out", str(other)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return str(other)


def test_a_client_certificate_does_not_replace_the_password(secured: tuple[Live, str]) -> None:
    """The status API does not ask for client certificates; one offered anyway (even the
    server's own) grants nothing: basic auth still decides."""
    live, cert = secured
    host, port = live.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=cert)
    context.load_cert_chain(cert, str(Path(cert).with_name("key.pem")))
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
    try:
        conn.request("GET", "/status")
        assert conn.getresponse().status == 401
    finally:
        conn.close()


def _port(live: Live) -> int:
    return int(live.url.rsplit(":", 1)[1])


def test_plain_http_on_the_tls_port_is_refused(secured: tuple[Live, str]) -> None:
    live, cert = secured
    with socket.create_connection(("127.0.0.1", _port(live)), timeout=5) as sock:
        auth = _auth()["Authorization"]
        sock.sendall(f"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b'"schema"' not in answer, "a plain-HTTP client got the status"
    _still_serves(live, cert)


@pytest.mark.parametrize(
    "junk",
    [b"", b"\x16\x03\x01\x00\x05abc", b"\x16\x03\x01\xff\xff" + b"\x00" * 100, b"\xff" * 5000],
    ids=["idle", "short-hello", "bad-hello", "noise"],
)
def test_idle_and_broken_handshakes_do_not_block_others(
    secured: tuple[Live, str], junk: bytes
) -> None:
    live, cert = secured
    held = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", _port(live)), timeout=5)
            if junk:
                sock.sendall(junk)
            held.append(sock)
        started = time.monotonic()
        _still_serves(live, cert)
        assert time.monotonic() - started < 2.0, "50 stuck connections slowed a good client"
    finally:
        for sock in held:
            sock.close()
    _still_serves(live, cert)


def test_oversized_headers_are_a_4xx(secured: tuple[Live, str]) -> None:
    live, cert = secured
    status, _ = _get(live, cert, "/status", {**_auth(), "X-Junk": "j" * 100_000})
    assert 400 <= status < 500
    status, _ = _get(live, cert, "/status", {"Authorization": "Basic " + "Q" * 100_000})
    assert 400 <= status < 500
    _still_serves(live, cert)
