"""The operability surface of a real `pgvip run`: /status, /metrics, /health, `pgvip status`,
and systemd notifications, reflecting an induced transition."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon.conftest import PGVIP, DaemonLab, wait_holder

pytestmark = pytest.mark.integration


def get(dlab: DaemonLab, host: str, path: str) -> tuple[int, str]:
    out = subprocess.run(
        ["ip", "netns", "exec", dlab.net.ns(host), "curl", "-s", "-m", "2", "-w",
         "\n%{http_code}", f"http://127.0.0.1:8010{path}"],
        capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise AssertionError(f"no sample {name}{labels}")


def test_status_and_metrics_follow_a_transition(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    time.sleep(0.5)
    code, body = get(dlab, "a", "/status")
    assert code == 200, body
    snap = json.loads(body)
    rw = snap["instances"]["rw"]
    assert (rw["state"], rw["held"], rw["eligible"]) == ("MASTER", True, True)
    assert rw["poll"]["verdict"] == "yes"
    assert rw["last_takeover"] is not None and rw["last_takeover"] < 2.0
    assert snap["pgvip"]["ready"] is True
    code, text = get(dlab, "a", "/metrics")
    assert code == 200
    assert metric(text, "pgvip_vip_held", vrrp_instance="rw") == 1

    a.set_primary(503)  # induce MASTER -> FAULT
    wait_holder(dlab, [])
    time.sleep(0.3)
    snap = json.loads(get(dlab, "a", "/status")[1])
    rw = snap["instances"]["rw"]
    assert (rw["state"], rw["held"]) == ("FAULT", False)
    last = rw["transitions"][-1]
    assert (last["from_state"], last["to_state"], last["reason_kind"]) == (
        "MASTER", "FAULT", "ineligible")  # fmt: skip
    text = get(dlab, "a", "/metrics")[1]
    assert metric(text, "pgvip_vip_held", vrrp_instance="rw") == 0
    assert get(dlab, "a", "/health")[0] == 200
    assert get(dlab, "a", "/nope")[0] == 404


def test_pgvip_status_command_both_modes(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    time.sleep(0.3)

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", dlab.net.ns("a"), PGVIP, "status", *args],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip

    human = status()
    assert human.returncode == 0, human.stderr
    assert "MASTER" in human.stdout and "192.0.2.50" in human.stdout
    machine = status("--json")
    assert json.loads(machine.stdout)["instances"]["rw"]["state"] == "MASTER"
    down = subprocess.run(
        ["ip", "netns", "exec", dlab.net.ns("b"), PGVIP, "status"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert down.returncode != 0 and "Traceback" not in down.stderr


def test_sd_notify_ready_only_after_the_first_reconcile(dlab: DaemonLab) -> None:
    sock_path = dlab.tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(10)
    try:
        dlab.start_standin("a", primary=503)
        dlab.start_pgvip("a", env={"NOTIFY_SOCKET": str(sock_path)})
        first = sock.recv(4096).decode()
        assert first.startswith("READY=1"), first
        assert "STATUS=" in first and "rw" in first
        # READY follows a reconcile pass: the daemon is serving /status by then.
        snap = json.loads(get(dlab, "a", "/status")[1])
        assert snap["pgvip"]["ready"] is True
    finally:
        sock.close()


def test_status_port_in_use_exits_2_naming_the_port(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    blocker = subprocess.Popen(
        ["ip", "netns", "exec", dlab.net.ns("a"), "python3", "-c",
         "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 8010)); s.listen(); "
         "time.sleep(30)"],
    )  # fmt: skip
    dlab.extra_procs.append(blocker)
    time.sleep(0.5)
    node = dlab.start_pgvip("a")
    assert node.daemon is not None
    code = node.daemon.wait(15)
    assert code == 2
    assert node.log_path is not None
    lines = node.log_path.read_text().strip().splitlines()
    assert "8010" in lines[-1] and "Traceback" not in node.log_path.read_text()
    assert dlab.holders() == [], "a daemon that failed to start must hold no VIP"


def test_openapi_schema_holds_for_the_live_daemon(dlab: DaemonLab) -> None:
    """schemathesis, run from inside the daemon's namespace, against a real `pgvip run`."""
    dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    schema = Path(__file__).resolve().parents[3] / "docs" / "openapi.yaml"
    result = subprocess.run(
        ["ip", "netns", "exec", dlab.net.ns("a"), str(Path(PGVIP).with_name("schemathesis")),
         "run", str(schema), "--url", "http://127.0.0.1:8010", "--max-examples", "25",
         "--checks", "all", "--no-color"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in dlab.nodes["a"].log_path.read_text(), "bad requests: one line"  # type: ignore[union-attr]
