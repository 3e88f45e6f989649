"""`pgvip run` itself against a real IPVS kernel: three daemons with the stock RO settings on
one flat LAN in the qemu guest (Debian 6.1, TCG), with Patroni and PostgreSQL played by
guest_daemon.py. One boot runs the whole scenario; each test asserts one part of its record.

What issue 13 found: nothing ran the daemon's RO role on IPVS, and the stock `nat` got 0 of
10 connections through on a flat LAN. Here the stock config must carry every connection, then
every scheduler and forwarding method the config accepts (applied by SIGHUP) and IPv6 VIPs.
About 140 s with 2 guest CPUs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Imported here so the host writes fresh .pyc files the read-only guest can use.
import pgvip.cli  # noqa: F401
import pgvip.daemon.service  # noqa: F401
from tests.integration.ipvs_vm import guest_daemon as g
from tests.integration.ipvs_vm.conftest import REPO, TIMINGS

pytestmark = pytest.mark.integration

SCENARIO = Path(g.__file__).resolve()
VM_TIMEOUT = 900.0
NODE_OF = {address: name for name, address in g.NODES.items()}


@pytest.fixture(scope="module")
def run(vm: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = vm.run(
        [sys.executable, str(SCENARIO)],
        cwd=str(REPO),
        env={"PYTHONPATH": str(REPO)},
        timeout=VM_TIMEOUT,
        memory_mb=1024,
        cpus=2,
    )
    lines = [ln for ln in result.output.splitlines() if g.RESULT_PREFIX in ln]
    assert lines, (
        f"no result line from the guest (exit {result.exit_code}):\n{result.output[-4000:]}"
    )
    record: dict[str, Any] = json.loads(lines[-1].split(g.RESULT_PREFIX, 1)[1])
    # The whole record, daemon logs included, for reading after a failed assertion.
    saved = tmp_path_factory.mktemp("ipvs-daemon") / "record.json"
    saved.write_text(json.dumps(record, indent=1))
    steps = record["timings"]
    TIMINGS.append(f"daemon scenario: total {result.total_s:.1f} s; " + ", ".join(
        f"{k} {v}" for k, v in steps.items()) + f"; record: {saved}")  # fmt: skip
    if record["error"]:
        logs = "\n".join(f"--- {n}\n{t[-2500:]}" for n, t in record.get("logs", {}).items())
        pytest.fail(f"guest step {record['error']['step']} failed:\n"
                    f"{record['error']['traceback']}\n{logs}")  # fmt: skip
    return record


def test_the_daemons_elect_a_replica_director_that_picks_ipvs_nat_and_says_why(
    run: dict[str, Any],
) -> None:
    start = run["start"]
    assert start["director"] in ("n2", "n3")
    ro = start["status"]["ro"]
    assert ro["dataplane"] == "ipvs" and ro["forwarding"] == "nat" and ro["scheduler"] == "rr"
    assert "IPVS available" in ro["dataplane_reason"]
    assert "one-armed" in ro["forwarding_reason"]
    assert ro["directing"] is True and ro["healthy"] == 2
    # Only the director has an IPVS service; nobody else balances.
    for name, state in start["others"].items():
        assert state["ipvs_dests"] == [], name


def test_a_flat_lan_client_gets_every_connection_through_the_stock_ro_vip(
    run: dict[str, Any],
) -> None:
    traffic = run["flat_lan_traffic"]
    ro = traffic["ro"]
    assert sum(ro.values()) == g.CONNECTIONS
    assert set(ro) == {"n2", "n3"}, ro  # no failure of any kind, and never the primary
    assert max(ro.values()) / min(ro.values()) <= 1.05
    assert traffic["rw"] == {"n1": 20}


def test_a_replica_that_stops_leaves_rotation_and_returns(run: dict[str, Any]) -> None:
    out = run["replica_leaves_and_returns"]
    gone = out["member"]
    assert gone not in out["while_out"] and sum(out["while_out"].values()) == 20
    # Out of rotation at once (weight 0), deleted after ro.drain_timeout (10 s by default).
    assert out["out_s"] < 5.0
    assert g.NODES[gone] in out["weight0_dests"]
    assert 8.0 <= out["deleted_s"] <= 30.0
    reader = out["reader"]
    # Failures fail fast (refused at once, never a 1 s timeout) and stay few.
    assert reader["kinds"].get("timeout", 0) == 0, reader
    assert reader["served"][gone] > 0  # it came back and served again


def test_with_no_healthy_replica_the_primary_serves_the_ro_vip(run: dict[str, Any]) -> None:
    out = run["fallback_to_primary"]
    assert out["director"] == "n1"  # both replicas resigned: the primary directs
    assert out["traffic"] == {"n1": 20}
    assert out["status"]["ro"]["fallback_active"] is True


def test_sigterm_hands_the_director_over_and_cleans_up(run: dict[str, Any]) -> None:
    out = run["handoff_sigterm"]
    assert out["exit_code"] == 0
    assert out["new"] not in (None, out["old"])
    old = out["old_state"]
    assert g.RO_VIP not in old["vips"]
    if not out["cleanup_missed"]:
        # The daemon's own clean-up finished: IPVS empty, its sysctls restored. Not asserted:
        # the pgvip_ipvs masquerade table, removed last (harmless without the IPVS service).
        assert old["ipvs_dests"] == [] and "TCP" not in old["ipvs"], old["ipvs"]
        restored = ("net/ipv4/ip_forward", "net/ipv4/vs/conntrack",
                    "net/ipv4/vs/expire_nodest_conn")  # fmt: skip
        assert old["sysctls"] == dict.fromkeys(restored, "0")
    # Else it logged that it ran out of its 0.4 s budget (a known limit, docs/fault-matrix.md;
    # seen under TCG, 2 of 4 runs on a slow host): what ExecStopPost must then remove is below.
    # Then the unit's ExecStopPost: nothing of pgvip's is left.
    assert out["release"]["code"] == 0, out["release"]["out"]
    after = out["after_release"]
    assert not any("pgvip" in t for t in after["nft_tables"]), after["nft_tables"]
    assert after["vips"] == [] and after["ipvs_dests"] == []
    reader = out["reader"]
    assert reader["kinds"].get("timeout", 0) <= 2, reader  # a handoff fails fast, if at all
    assert sum(out["traffic"].values()) == 100 and set(out["traffic"]) == {"n2", "n3"}


def test_kill9_leaves_state_that_release_removes(run: dict[str, Any]) -> None:
    out = run["kill9_and_release"]
    left = out["left_behind"]
    assert left["ipvs_dests"] != [] and "table inet pgvip_ipvs" in left["nft_tables"]
    assert out["release"]["code"] == 0, out["release"]["out"]
    after = out["after_release"]
    assert after["ipvs_dests"] == [] and "TCP" not in after["ipvs"]
    assert not any("pgvip" in t for t in after["nft_tables"]), after["nft_tables"]
    assert after["vips"] == []
    assert out["new"] not in (None, out["victim"])
    assert sum(out["traffic"].values()) == 100 and set(out["traffic"]) <= {"n1", "n2", "n3"}


def least_connections(before: dict[str, int], weights: dict[str, int], n: int) -> dict[str, int]:
    """Where lc (equal weights) or wlc sends `n` sequential, closed connections: each to the
    dest with the least overhead per weight, which then counts one more."""
    overhead = {m: before.get(m, 0) for m in weights}
    got = dict.fromkeys(weights, 0)
    for _ in range(n):
        pick = min(overhead, key=lambda m: overhead[m] / weights[m])
        overhead[pick] += 1
        got[pick] += 1
    return got


def test_every_scheduler_and_forwarding_carries_every_connection(run: dict[str, Any]) -> None:
    variants = run["schedulers_and_forwarding"]
    assert set(variants) == {f"{s}/{f}" for s, f in g.VARIANTS}
    for key, out in variants.items():
        scheduler, forwarding = key.split("/")
        traffic = out["traffic"]
        assert sum(traffic.values()) == g.VARIANT_CONNECTIONS, (key, traffic)
        assert set(traffic) <= {"n2", "n3"}, (key, traffic)  # no failure, never the primary
        assert out["ro"]["scheduler"] == scheduler and out["ro"]["forwarding"] == forwarding
        if out["hot"]:  # only ro.scheduler changed: every daemon retuned, none re-elected
            assert out["reelected"] == [] and out["retuned"] == sorted(g.NODES), (key, out)
            assert out["director"] == out["director_before"], (key, out)
        else:  # ro.forwarding changed: a new engine, a new election, everywhere
            assert out["reelected"] == sorted(g.NODES), (key, out)
        n2, n3 = traffic.get("n2", 0), traffic.get("n3", 0)
        if scheduler == "rr":
            # Round robin, not exact alternation: a reconnect that IPVS matches to a
            # connection entry it still keeps goes where that one went (seen once: 103/97
            # with dr). A broken scheduler gives far more skew than this.
            assert max(n2, n3) / min(n2, n3) <= 1.15, (key, traffic)
        elif scheduler == "wrr":  # pgvip_weight 3 and 1
            assert abs(n2 - 0.75 * g.VARIANT_CONNECTIONS) <= 10, (key, traffic)
        elif scheduler in ("lc", "wlc"):
            # Least connections over what the service already had (a retune keeps IPVS's
            # connection entries), weighted 3:1 for wlc: as many as a model of the kernel's
            # choice gives, within a slack for entries that expire meanwhile.
            weights = g.WEIGHTS if scheduler == "wlc" else {"n2": 1, "n3": 1}
            want = least_connections(out["overhead_before"], weights, g.VARIANT_CONNECTIONS)
            assert abs(n2 - want["n2"]) <= 15, (key, traffic, want, out["overhead_before"])
        else:  # sh, mh: one client address hashes to one backend
            assert sorted(traffic.values()) == [g.VARIANT_CONNECTIONS], (key, traffic)
        # dr: the VIP on lo of every node but the director; otherwise (after a reload from
        # dr) on none: a leftover would make a node answer its own RO clients itself.
        want = {n: forwarding == "dr" and n != out["director"] for n in g.NODES}
        assert out["lo_vips"] == want, (key, out["lo_vips"])


def test_ipv6_vips_with_the_stock_ro_settings(run: dict[str, Any]) -> None:
    out = run["ipv6"]
    assert out["director"] in ("n2", "n3")
    ro = out["ro"]
    assert sum(ro.values()) == g.VARIANT_CONNECTIONS and set(ro) == {"n2", "n3"}, ro
    assert max(ro.values()) / min(ro.values()) <= 1.05
    assert out["rw"] == {"n1": 10}
    assert out["ipv4_vips_left"] == []
