"""StatusServer on a real loopback socket: /status follows the daemon's state, /metrics
follows its calls, errors are JSON 4xx/5xx, auth and TLS work, and a taken port is a clear
StatusServerError."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgvip import __version__
from pgvip.status.client import fetch_status
from pgvip.status.metrics import Metrics
from pgvip.status.server import StatusServer, StatusServerError
from tests.integration.status.conftest import Live, LoopThread, http_get, status_config
from tests.unit.status.samples import NOW, instance, transition


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_status_serves_the_snapshot_with_the_pgvip_marker(live: Live) -> None:
    answer = http_get(live.url + "/status")
    assert answer.status == 200
    assert answer.headers["Server"] == f"pgvip/{__version__}"
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == live.source.current


def test_an_induced_transition_shows_in_status_and_metrics(live: Live) -> None:
    """The daemon moves rw MASTER -> BACKUP: both endpoints show it on the next request."""
    before = http_get(live.url + "/status").json()
    assert before["instances"]["rw"]["state"] == "MASTER"

    reason = "master 10.20.31.12 has higher priority 250 > 200"
    rw = instance("rw", "BACKUP")
    rw["held"] = False
    rw["transitions"] = before["instances"]["rw"]["transitions"] + [
        transition(NOW + 1, "MASTER", "BACKUP", reason, kind="higher_priority")
    ]
    live.source.current = {**live.source.current, "instances": {"rw": rw}}
    live.metrics.transition("rw", "MASTER", "BACKUP", "higher_priority")
    live.metrics.vip_held("rw", False)

    after = http_get(live.url + "/status").json()
    assert after["instances"]["rw"]["state"] == "BACKUP"
    assert after["instances"]["rw"]["transitions"][-1]["reason"] == reason
    assert after["instances"]["rw"]["transitions"][-1]["reason_kind"] == "higher_priority"

    text = http_get(live.url + "/metrics").body.decode()
    assert metric(text, "pgvip_vrrp_state", vrrp_instance="rw", state="BACKUP") == 1
    assert metric(text, "pgvip_vrrp_state", vrrp_instance="rw", state="MASTER") == 0
    assert metric(text, "pgvip_vip_held", vrrp_instance="rw") == 0
    assert (
        metric(
            text,
            "pgvip_vrrp_transitions_total",
            vrrp_instance="rw",
            from_state="MASTER",
            to_state="BACKUP",
            reason_kind="higher_priority",
        )
        == 1
    )


def test_metrics_parse_and_openmetrics_on_request(live: Live) -> None:
    live.metrics.poll("rw", 0.01, "ok")
    plain = http_get(live.url + "/metrics")
    assert plain.status == 200 and plain.headers["Content-Type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(plain.body.decode())}
    assert {"pgvip_vip_held", "pgvip_patroni_poll_duration_seconds", "pgvip_takeover_seconds"} <= (
        families
    )
    om = http_get(live.url + "/metrics", {"Accept": "application/openmetrics-text"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.body.rstrip().endswith(b"# EOF")


def test_transitions_query_limits_the_history(live: Live) -> None:
    one = http_get(live.url + "/status?transitions=1").json()
    assert [t["to_state"] for t in one["instances"]["rw"]["transitions"]] == ["MASTER"]
    none = http_get(live.url + "/status?transitions=0").json()
    assert none["instances"]["rw"]["transitions"] == []
    # The daemon's own snapshot is not trimmed by a request.
    assert len(live.source.current["instances"]["rw"]["transitions"]) == 2


@pytest.mark.parametrize("value", ["abc", "-1", "1001", "1e3", ""])
def test_bad_query_is_a_json_400(live: Live, value: str) -> None:
    answer = http_get(live.url + f"/status?transitions={value}")
    assert answer.status == 400
    assert "transitions must be an integer 0-1000" in answer.json()["error"]


def test_unknown_path_and_method_are_json_4xx(live: Live) -> None:
    missing = http_get(live.url + "/nope")
    assert missing.status == 404 and missing.json() == {"error": "Not Found", "status": 404}
    assert missing.headers["Server"].startswith("pgvip/")
    post = http_get(live.url + "/status", method="POST")
    assert post.status == 405 and "GET" in post.headers["Allow"]
    assert post.json()["status"] == 405


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /status HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,  # TLS to a plain port
    ],
)
async def test_malformed_http_is_a_4xx_without_traceback(live: Live, request_bytes: bytes) -> None:
    answer = await _raw(live.server.port, request_bytes)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:200]
    assert b"Traceback" not in answer
    # The server is still serving afterwards.
    assert http_get(live.url + "/health").status == 200


def test_a_failing_snapshot_is_a_json_500(live: Live) -> None:
    live.source.error = KeyError("runners")
    answer = http_get(live.url + "/status")
    assert answer.status == 500
    assert answer.json()["error"] == "internal error: KeyError: 'runners'"
    assert b"Traceback" not in answer.body


def test_a_snapshot_that_is_not_json_is_a_500(live: Live) -> None:
    live.source.current = {**live.source.current, "now": float("nan")}
    answer = http_get(live.url + "/status")
    assert answer.status == 500 and "not valid JSON" in answer.json()["error"]


def test_snapshot_with_addresses_and_enums_is_serialised(live: Live) -> None:
    import ipaddress

    from pgvip.vrrp.instance import State

    rw = instance("rw")
    rw["state"] = State.MASTER  # type: ignore[typeddict-item]
    rw["master"]["address"] = ipaddress.ip_address("10.20.31.11")  # type: ignore[typeddict-item]
    live.source.current = {**live.source.current, "instances": {"rw": rw}}
    got = http_get(live.url + "/status").json()["instances"]["rw"]
    assert got["state"] == "MASTER" and got["master"]["address"] == "10.20.31.11"


def test_health_follows_the_liveness_check(servers: Callable[..., Live]) -> None:
    problem: list[str | None] = [None]
    live = servers(health=lambda: problem[0])
    assert http_get(live.url + "/health").json() == {"status": "ok"}
    problem[0] = "task vrrp-rw ended"
    answer = http_get(live.url + "/health")
    assert answer.status == 503
    assert answer.json() == {"status": "unhealthy", "problem": "task vrrp-rw ended"}


# -- basic auth and TLS --------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth(servers: Callable[..., Live], tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    live = servers(status_config(username="ops", password_file=str(pw)))
    for path in ("/status", "/metrics"):
        denied = http_get(live.url + path)
        assert denied.status == 401
        assert denied.headers["WWW-Authenticate"].startswith('Basic realm="pgvip"')
        assert denied.json()["status"] == 401
        assert http_get(live.url + path, _basic("ops", "wrong")).status == 401
        assert http_get(live.url + path, {"Authorization": "Basic !!!notbase64"}).status == 401
        assert http_get(live.url + path, {"Authorization": "Bearer x"}).status == 401
        assert http_get(live.url + path, _basic("ops", "s3cret")).status == 200
    # Liveness probes carry no credentials.
    assert http_get(live.url + "/health").status == 200
    # And the client library passes them.
    assert fetch_status(live.url, username="ops", password="s3cret")["schema"] == 1


def test_unreadable_password_file_names_the_setting(loop_thread: LoopThread) -> None:
    server = StatusServer(
        status_config(username="ops", password_file="/nonexistent/pw"), dict, Metrics()
    )
    with pytest.raises(
        StatusServerError, match=r"/nonexistent/pw: cannot read status\.password_file"
    ):
        loop_thread.run(server.start())


def test_tls(servers: Callable[..., Live], self_signed: tuple[str, str]) -> None:
    cert, key = self_signed
    live = servers(status_config(cert_file=cert, key_file=key))
    assert live.url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=cert)
    with urllib.request.urlopen(live.url + "/status", context=context, timeout=5) as r:
        assert json.loads(r.read())["schema"] == 1
    assert fetch_status(live.url, cafile=cert)["pgvip"]["node"] == "node1"


def test_bad_certificate_is_a_clear_error(loop_thread: LoopThread, tmp_path: Path) -> None:
    bogus = tmp_path / "cert.pem"
    bogus.write_text("not a certificate\n")
    server = StatusServer(status_config(cert_file=str(bogus), key_file=str(bogus)), dict, Metrics())
    with pytest.raises(StatusServerError, match=r"status\.cert_file .*cannot load"):
        loop_thread.run(server.start())


# -- binding -----------------------------------------------------------------------------


def test_port_in_use_is_a_clear_error(loop_thread: LoopThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = StatusServer(status_config(port=port), dict, Metrics())
        with pytest.raises(StatusServerError) as info:
            loop_thread.run(server.start())
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert f"port {port} is already in use" in message and "status.port" in message


def test_address_not_on_this_host_is_a_clear_error(loop_thread: LoopThread) -> None:
    import ipaddress

    # TEST-NET-1: never assigned to a host here.
    server = StatusServer(status_config(listen=ipaddress.ip_address("192.0.2.1")), dict, Metrics())
    with pytest.raises(StatusServerError, match=r"192\.0\.2\.1 is not an address of this host"):
        loop_thread.run(server.start())


def test_stop_frees_the_port(loop_thread: LoopThread) -> None:
    first = StatusServer(status_config(), dict, Metrics())
    loop_thread.run(first.start())
    port = first.port
    loop_thread.run(first.stop())
    loop_thread.run(first.stop())  # idempotent
    again = StatusServer(status_config(port=port), dict, Metrics())
    loop_thread.run(again.start())
    try:
        assert http_get(again.url + "/health").status == 200
    finally:
        loop_thread.run(again.stop())
