"""pgvip's IPVS dataplane against a real IPVS kernel: Debian's 6.1 booted in qemu (TCG), since
this host's kernel has no IPVS.

One boot runs guest_scenario.py, which records what it saw as one JSON line; each test here
asserts one item of it. A missing qemu or kernel package is a failure that says to run
scripts/setup.sh, never a skip.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Imported here so the host writes fresh .pyc files the read-only guest can use: compiling
# them under TCG would cost seconds.
import pgvip.dataplane.balancer.choice  # noqa: F401
import pgvip.dataplane.balancer.realserver  # noqa: F401
from pgvip.dataplane.balancer import RealServer, virtual_service
from tests.integration.ipvs_vm import guest_scenario as g
from tests.integration.ipvs_vm.conftest import REPO, TIMINGS

pytestmark = pytest.mark.integration

SCENARIO = Path(g.__file__).resolve()
VM_TIMEOUT = 150.0  # measured ~22 s here; the slack is for slower CI machines
PORT = g.PORT


def expected(
    vip: str,
    backends: dict[str, str],
    weights: dict[str, int],
    *,
    scheduler: str = "rr",
    forwarding: str = "nat",
    persistence_timeout: int = 0,
) -> dict[str, Any] | None:
    servers = [RealServer(ipaddress.ip_address(backends[n]), PORT, w) for n, w in weights.items()]
    vs = virtual_service(
        vip,
        PORT,
        servers,
        scheduler=scheduler,
        forwarding=forwarding,
        persistence_timeout=persistence_timeout,
    )
    return g.describe(vs)


def parse_ipvsadm(text: str) -> dict[str, dict[str, Any]]:
    """`ipvsadm -Ln` as {"10.0.0.1:80": {"scheduler", "flags", "dests": {addr: (fwd, weight)}}}."""
    services: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        words = line.split()
        if words[:1] in (["TCP"], ["UDP"], ["FWM"]):
            current = {"scheduler": words[2], "flags": words[3:], "dests": {}}
            services[words[1]] = current
        elif words[:1] == ["->"] and current is not None:
            current["dests"][words[1]] = (words[2], int(words[3]))
    return services


@pytest.fixture(scope="module")
def guest(vm: ModuleType) -> dict[str, Any]:
    """Boot the guest once and run the scenario; its recorded results."""
    try:
        result = vm.run(
            [sys.executable, str(SCENARIO)],
            cwd=str(REPO),
            # The guest must import this checkout, whatever the venv's editable install says.
            env={"PYTHONPATH": str(REPO)},
            timeout=VM_TIMEOUT,
        )
    except vm.VmError as exc:
        pytest.fail(f"IPVS guest: {exc}", pytrace=False)
    lines = [ln for ln in result.output.splitlines() if ln.startswith(g.RESULT_PREFIX)]
    if not lines:
        tail = "\n".join(result.output.splitlines()[-40:])
        pytest.fail(
            f"the guest scenario printed no result line (exit {result.exit_code}):\n{tail}",
            pytrace=False,
        )
    results: dict[str, Any] = json.loads(lines[-1].removeprefix(g.RESULT_PREFIX))
    steps = results["timings"]
    TIMINGS.append(
        f"kernel {result.kernel_version}: image build {result.build_s:.1f} s, "
        f"boot {result.boot_s:.1f} s, command {result.command_s:.1f} s, "
        f"qemu total {result.total_s:.1f} s"
    )
    TIMINGS.append("guest scenario: " + ", ".join(f"{k} {v}" for k, v in steps.items()))
    results["exit_code"] = result.exit_code
    return results


def section(guest: dict[str, Any], name: str) -> Any:
    """One step's record, or a failure carrying the guest's traceback if it never got there."""
    if name not in guest:
        error = guest.get("error") or {}
        pytest.fail(
            f"the guest did not record {name!r}; it failed in step {error.get('step')!r}:\n"
            f"{error.get('traceback', '(no traceback)')}",
            pytrace=False,
        )
    return guest[name]


def assert_alternates(answers: list[str], names: set[str]) -> None:
    assert set(answers) == names, answers
    assert all(a != b for a, b in zip(answers, answers[1:], strict=False)), answers


def test_scenario_ran_to_the_end(guest: dict[str, Any]) -> None:
    error = guest["error"]
    assert error is None, f"step {error['step']}:\n{error['traceback']}"
    assert guest["exit_code"] == 0


def test_ipvs_is_detected_and_auto_picks_it(guest: dict[str, Any]) -> None:
    probe = section(guest, "probe")
    assert probe["available"] is True, probe["detail"]
    assert probe["chosen"] == "ipvs"
    assert "using IPVS" in probe["reason"]


def test_apply_creates_the_service_and_reads_it_back(guest: dict[str, Any]) -> None:
    rec = section(guest, "apply")
    want = expected(g.VIP4, g.BACKENDS4, {"b1": 1, "b2": 1})
    assert rec["desired"] == want
    assert rec["actual_before"] is None
    assert rec["changed"] is True
    assert rec["changed_again"] is False, "a second apply of the same service changed something"
    assert rec["actual"] == want
    services = parse_ipvsadm(rec["ipvsadm"])
    assert services == {
        f"{g.VIP4}:{PORT}": {
            "scheduler": "rr",
            "flags": [],
            "dests": {f"{a}:{PORT}": ("Masq", 1) for a in g.BACKENDS4.values()},
        }
    }


def test_nat_director_sysctls_are_set(guest: dict[str, Any]) -> None:
    rec = section(guest, "apply")
    assert rec["sysctls_before"]["net/ipv4/ip_forward"] == "0"
    assert rec["sysctls"]["net/ipv4/ip_forward"] == "1"
    assert rec["sysctls"]["net/ipv4/conf/all/send_redirects"] == "0"
    assert rec["sysctls"]["net/ipv4/conf/cli/send_redirects"] == "0"


def test_round_robin_alternates_between_backends(guest: dict[str, Any]) -> None:
    answers = section(guest, "rr_traffic")
    assert len(answers) == 10
    assert_alternates(answers, {"b1", "b2"})
    assert answers.count("b1") == answers.count("b2") == 5


def test_persistence_is_a_service_edit_and_pins_the_client(guest: dict[str, Any]) -> None:
    rec = section(guest, "persistence")
    want = expected(g.VIP4, g.BACKENDS4, {"b1": 1, "b2": 1}, persistence_timeout=600)
    assert rec["plan"] == [["EditService", None, None]]
    assert rec["changed"] is True
    assert rec["actual"] == want
    service = parse_ipvsadm(rec["ipvsadm"])[f"{g.VIP4}:{PORT}"]
    assert service["flags"] == ["persistent", "600"]
    assert len(rec["traffic"]) == 6
    assert len(set(rec["traffic"])) == 1 and rec["traffic"][0] in {"b1", "b2"}, rec["traffic"]


def test_reweight_and_scheduler_change_is_a_minimal_plan(guest: dict[str, Any]) -> None:
    rec = section(guest, "reweight")
    want = expected(g.VIP4, g.BACKENDS4, {"b1": 3, "b2": 1}, scheduler="wrr")
    # The service (scheduler, persistence back to 0) and the one dest whose weight changed.
    assert rec["plan"] == [["EditService", None, None], ["EditDest", g.BACKENDS4["b1"], 3]]
    assert rec["changed"] is True
    assert rec["actual"] == want
    service = parse_ipvsadm(rec["ipvsadm"])[f"{g.VIP4}:{PORT}"]
    assert service["scheduler"] == "wrr"
    assert service["flags"] == []
    assert service["dests"] == {
        f"{g.BACKENDS4['b1']}:{PORT}": ("Masq", 3),
        f"{g.BACKENDS4['b2']}:{PORT}": ("Masq", 1),
    }
    # wrr restarts its cycle when a weight changes: 8 connections are two full 3:1 cycles.
    assert {n: rec["traffic"].count(n) for n in ("b1", "b2")} == {"b1": 6, "b2": 2}, rec["traffic"]


def test_removing_a_backend_deletes_only_that_dest(guest: dict[str, Any]) -> None:
    rec = section(guest, "remove_backend")
    want = expected(g.VIP4, g.BACKENDS4, {"b1": 3}, scheduler="wrr")
    assert rec["plan"] == [["DelDest", g.BACKENDS4["b2"], 1]]
    assert rec["changed"] is True
    assert rec["actual"] == want
    service = parse_ipvsadm(rec["ipvsadm"])[f"{g.VIP4}:{PORT}"]
    assert service["dests"] == {f"{g.BACKENDS4['b1']}:{PORT}": ("Masq", 3)}
    assert rec["traffic"] == ["b1"] * 4
    assert rec["found_by_fresh_instance"] == want, "a restarted daemon must find its service"


def test_ipv6_service(guest: dict[str, Any]) -> None:
    rec = section(guest, "ipv6")
    want = expected(g.VIP6, g.BACKENDS6, {"b1": 1, "b2": 1})
    assert rec["changed"] is True
    assert rec["changed_again"] is False
    assert rec["actual"] == want
    service = parse_ipvsadm(rec["ipvsadm"])[f"[{g.VIP6}]:{PORT}"]
    assert service["scheduler"] == "rr"
    assert service["dests"] == {f"[{a}]:{PORT}": ("Masq", 1) for a in g.BACKENDS6.values()}
    assert rec["sysctls"]["net/ipv6/conf/all/forwarding"] == "1"
    assert len(rec["traffic"]) == 4
    assert_alternates(rec["traffic"], {"b1", "b2"})
    assert rec["actual_after_clear"] is None
    assert rec["ipv4_after_clear"] == expected(g.VIP4, g.BACKENDS4, {"b1": 3}, scheduler="wrr")


def test_clear_empties_ipvs_and_restores_sysctls(guest: dict[str, Any]) -> None:
    rec = section(guest, "clear")
    assert rec["actual"] is None
    assert parse_ipvsadm(rec["ipvsadm"]) == {}
    assert "IP Virtual Server version" in rec["ipvsadm"]  # ipvsadm did run
    assert rec["sysctls"] == section(guest, "apply")["sysctls_before"]
    assert rec["cleared_twice"] is True


def test_direct_routing_with_real_servers(guest: dict[str, Any]) -> None:
    rec = section(guest, "direct_routing")
    lan = {b: g.LAN_HOSTS[b] for b in ("b1", "b2")}
    want = expected(g.VIP_DR, lan, {"b1": 1, "b2": 1}, forwarding="dr")
    assert rec["real_server_added"] == {"b1": True, "b2": True}
    assert rec["real_server_added_again"] == {"b1": False, "b2": False}
    for b in ("b1", "b2"):
        assert f"{g.VIP_DR}/32" in rec["lo_addresses"][b]
        assert set(rec["rs_sysctls"][b].values()) <= {"1", "2"}
        assert rec["rs_sysctls"][b]["net/ipv4/conf/all/arp_ignore"] == "1"
        assert rec["rs_sysctls"][b]["net/ipv4/conf/all/arp_announce"] == "2"
    assert rec["changed"] is True
    assert rec["actual"] == want
    service = parse_ipvsadm(rec["ipvsadm"])[f"{g.VIP_DR}:{PORT}"]
    assert service["dests"] == {f"{a}:{PORT}": ("Route", 1) for a in lan.values()}
    assert len(rec["traffic"]) == 4
    assert_alternates(rec["traffic"], {"b1", "b2"})
    # DR needs no forwarding on the director, so pgvip must not have switched it on.
    assert rec["sysctls"]["net/ipv4/ip_forward"] == "0"
    # The real servers hold the VIP but keep quiet on ARP: the client reached the director.
    assert rec["client_neighbour_mac"] == rec["director_mac"]
    assert rec["director_mac"] not in rec["real_server_macs"].values()
    assert rec["real_server_removed"] == {"b1": True, "b2": True}
    assert rec["real_server_removed_again"] == {"b1": False, "b2": False}
    for b in ("b1", "b2"):
        assert f"{g.VIP_DR}/32" not in rec["lo_addresses_after"][b]
    assert parse_ipvsadm(rec["ipvsadm_after_clear"]) == {}


def test_stock_nat_works_on_a_flat_lan(guest: dict[str, Any]) -> None:
    """Issue 13: on one subnet with the backends' default route elsewhere, plain IPVS NAT got
    0 of 10 connections through. pgvip's nat is one-armed (vs.conntrack + masquerade): every
    connection of 1000 gets through, split evenly by rr, and clear() takes it all back."""
    out = guest["flat_nat"]
    assert out["forwarding"] == "nat" and out["changed"] is True
    assert out["sysctls_before"]["net/ipv4/vs/conntrack"] == "0"
    assert out["sysctls"] == {"net/ipv4/vs/conntrack": "1", "net/ipv4/ip_forward": "1"}
    assert out["masquerade"] == [f"{g.VIP_DR}:{PORT}"]
    traffic = out["traffic"]
    assert sum(traffic.values()) == g.FLAT_CONNECTIONS
    assert set(traffic) == {"b1", "b2"}, traffic  # no errors at all
    assert max(traffic.values()) / min(traffic.values()) <= 1.05
    assert out["masquerade_after_clear"] is None
    assert out["sysctls_after_clear"] == out["sysctls_before"]
    assert "TCP" not in out["ipvsadm_after_clear"]
