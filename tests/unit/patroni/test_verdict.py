"""Classification of Patroni answers and `/patroni` parsing."""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import ssl

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given
from hypothesis import strategies as st

from pgvip.patroni.verdict import (
    PatroniResponseError,
    PatroniStatus,
    Verdict,
    classify_exception,
    classify_status,
    decode_json,
    parse_patroni_body,
    parse_patroni_status,
)

# -- classify_status -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict", "reason", "cause"),
    [
        (200, Verdict.YES, "/primary 200", "ok"),
        (503, Verdict.NO, "/primary 503", "http_503"),
        (500, Verdict.UNKNOWN, "/primary 500", "http_500"),
        (404, Verdict.UNKNOWN, "/primary 404", "http_404"),
        (502, Verdict.UNKNOWN, "/primary 502", "http_502"),
        (204, Verdict.UNKNOWN, "/primary 204", "http_204"),
    ],
)
def test_classify_status(status: int, verdict: Verdict, reason: str, cause: str) -> None:
    assert classify_status("/primary", status) == (verdict, reason, cause)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_statuses_are_unknown_with_cause_auth(status: int) -> None:
    verdict, reason, cause = classify_status("/primary", status)
    assert verdict is Verdict.UNKNOWN
    assert cause == "auth"
    assert reason.startswith(f"/primary {status}")
    assert "patroni.username" in reason


# -- classify_exception ------------------------------------------------------------

_KEY = ConnectionKey("db1", 8008, False, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError("read timeout"), "timeout"),
        (aiohttp.ConnectionTimeoutError("connect timeout"), "timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
        (
            aiohttp.ClientConnectorError(_KEY, OSError(errno.ECONNREFUSED, "Connect call failed")),
            "refused",
        ),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable"),
        (
            aiohttp.ClientConnectorDNSError(_KEY, socket.gaierror(-2, "Name or service not known")),
            "dns",
        ),
        (socket.gaierror(-3, "Temporary failure in name resolution"), "dns"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls"),
        (ssl.SSLError(1, "wrong version number"), "tls"),
        (aiohttp.ServerDisconnectedError(), "disconnected"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "disconnected"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), "invalid"),
        (aiohttp.ClientResponseError(None, (), status=400, message="Expected HTTP/"), "invalid"),  # type: ignore[arg-type]
        (json.JSONDecodeError("Expecting value", "garbage", 0), "invalid"),
        (PatroniResponseError("/patroni: missing 'role'"), "invalid"),
        (RuntimeError("something else"), "error"),
    ],
)
def test_classify_exception(exc: BaseException, cause: str) -> None:
    verdict, reason, got = classify_exception(exc, target="127.0.0.1:8008/primary")
    assert verdict is Verdict.UNKNOWN
    assert got == cause
    assert "127.0.0.1:8008/primary" in reason


def test_refused_reason_matches_the_contract_example() -> None:
    exc = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert classify_exception(exc, target="127.0.0.1:8008") == (
        Verdict.UNKNOWN,
        "connect refused: 127.0.0.1:8008",
        "refused",
    )


def test_tls_reason_carries_the_openssl_verify_message() -> None:
    inner = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    inner.verify_message = "self-signed certificate"
    outer = aiohttp.ClientConnectorCertificateError(_KEY, inner)
    _, reason, cause = classify_exception(outer, target="db1:8008/primary")
    assert cause == "tls"
    assert "self-signed certificate" in reason


def test_wrapped_cause_is_found_through_the_exception_chain() -> None:
    try:
        try:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        except OSError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as outer:
        assert classify_exception(outer)[2] == "refused"


def test_long_details_are_cut_to_one_short_line() -> None:
    exc = PatroniResponseError("x" * 1000 + "\n" + "y" * 1000)
    _, reason, _ = classify_exception(exc, target="h:1/p")
    assert "\n" not in reason
    assert len(reason) < 250


# -- /patroni parsing ----------------------------------------------------------------

PATRONI_PRIMARY = {
    "state": "running",
    "postmaster_start_time": "2026-11-02 10:00:00.000000+00:00",
    "role": "primary",
    "server_version": 150020,
    "xlog": {"location": 50331968},
    "timeline": 2,
    "replication": [{"usename": "replicator", "application_name": "p2", "state": "streaming"}],
    "dcs_last_seen": 1793000000,
    "failsafe_mode_is_active": True,
    "database_system_identifier": "7300000000000000000",
    "patroni": {"version": "4.1.5", "scope": "demo", "name": "p1"},
}


def test_parse_patroni_status_of_a_real_shaped_answer() -> None:
    assert parse_patroni_status(PATRONI_PRIMARY) == PatroniStatus(
        role="primary",
        state="running",
        timeline=2,
        failsafe_mode_is_active=True,
        dcs_last_seen=1793000000,
        name="p1",
    )


def test_parse_patroni_status_minimal_answer_when_postgres_is_down() -> None:
    # What Patroni sends when its query fails: only state and role (+ dcs_last_seen).
    status = parse_patroni_status({"state": "stopped", "role": "replica", "dcs_last_seen": 1})
    assert status == PatroniStatus("replica", "stopped", None, None, 1, None)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2], "expected a JSON object, got list"),
        ("running", "expected a JSON object, got str"),
        ({"state": "running"}, "missing 'role'"),
        ({"role": "primary"}, "missing 'state'"),
        ({"role": 1, "state": "running"}, "'role' must be str, got int 1"),
        ({"role": "primary", "state": "running", "timeline": "2"}, "'timeline' must be int"),
        ({"role": "primary", "state": "running", "timeline": True}, "'timeline' must be int"),
        ({"role": "primary", "state": "running", "failsafe_mode_is_active": 1}, "must be bool"),
        ({"role": "primary", "state": "running", "dcs_last_seen": 1.5}, "'dcs_last_seen'"),
        ({"role": "primary", "state": "running", "patroni": "p1"}, "'patroni' must be dict"),
        ({"role": "primary", "state": "running", "patroni": {"name": 7}}, "'name' must be str"),
    ],
)
def test_parse_patroni_status_rejects_garbage_clearly(obj: object, message: str) -> None:
    with pytest.raises(PatroniResponseError, match="^/patroni: ") as info:
        parse_patroni_status(obj)
    assert message in str(info.value)


def test_parse_patroni_body_rejects_non_json() -> None:
    with pytest.raises(PatroniResponseError, match="/patroni: body is not JSON"):
        parse_patroni_body(b"<html>502 Bad Gateway</html>")
    with pytest.raises(PatroniResponseError, match="body is not JSON"):
        parse_patroni_body(b"\xff\xfe\x00garbage")
    assert parse_patroni_body(json.dumps(PATRONI_PRIMARY).encode()).name == "p1"


def test_decode_json_names_the_endpoint() -> None:
    with pytest.raises(PatroniResponseError, match="^/cluster: body is not JSON"):
        decode_json(b"{", "/cluster")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    ["role", "state", "timeline", "failsafe_mode_is_active", "dcs_last_seen", "patroni", "name"]
)
# Objects built from the real key names reach the type checks, not just "not a dict".
_patroni_like = st.dictionaries(_keys, _json | st.dictionaries(_keys, _json), max_size=7)


@given(_json | _patroni_like)
def test_arbitrary_json_only_ever_raises_patroni_response_error(obj: object) -> None:
    try:
        status = parse_patroni_status(obj)
    except PatroniResponseError:
        return
    assert isinstance(status.role, str)
    assert isinstance(status.state, str)
    assert status.timeline is None or type(status.timeline) is int
    assert status.failsafe_mode_is_active in (None, True, False)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_ever_raise_patroni_response_error(body: bytes) -> None:
    with contextlib.suppress(PatroniResponseError):
        parse_patroni_body(body)
