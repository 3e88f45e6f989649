"""Hostile VRRP packets into a running `pgvip run` (issue 14, item 4): a flood of fuzzed and
mutated packets from a raw socket in namespace b, the daemon in a, an observer of a's
adverts in c. Nothing invalid may crash it, change its state or silence its adverts, and
each dropped packet is counted by reason.

"Valid" is RFC 5798 §7.1 (TTL 255, version 3, type 1, complete packet, checksum over the
pseudo-header, a configured VRID) plus its "MAY verify" of the address list, which pgvip
does (an advert listing other addresses is dropped unless its priority is 255). VRRPv3 has
no authentication: a valid advert from an unknown source is obeyed, as the RFC says.

PGVIP_FUZZ_PACKETS, PGVIP_FUZZ_RATE (0: as fast as the sender can) and PGVIP_FUZZ_OUT (a
JSON file for the numbers) turn the flood test into the full run (scripts/fuzz-vrrp).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pgvip.vrrp.packet import VRRP_MCAST_V4, Advert, encode
from tests.integration.daemon.conftest import (
    VIP,
    VRID,
    DaemonLab,
    HolderSampler,
    Node,
    wait_for,
    wait_holder,
)
from tests.integration.netlab import run_in_netns, start_in_netns
from tests.integration.vrrp_fuzz import (
    AdvertObserver,
    FuzzStream,
    classify,
    flood,
    ip_header,
    observer_filter,
    proc_cpu_seconds,
    proc_rss_kib,
    raw_drops,
    rejected,
    send_once,
    status,
)

pytestmark = pytest.mark.integration

ADVERT_INT = 0.2  # render_config's advert_int = 20 centiseconds
SPOOF = IPv4Address("192.0.2.77")
VIP4 = IPv4Address(VIP)


def _rp_filter_off(dlab: DaemonLab, host: str) -> None:
    # Spoofed sources from outside the subnet must reach the daemon's socket.
    for dev in ("all", "default", "eth0"):
        dlab.net.sysctl(host, f"net.ipv4.conf.{dev}.rp_filter", "0")


def _advert(
    priority: int,
    *,
    src: IPv4Address = SPOOF,
    dst: IPv4Address = VRRP_MCAST_V4,
    ttl: int = 255,
    vrid: int = VRID,
    addresses: tuple[IPv4Address, ...] = (VIP4,),
    bad_checksum: bool = False,
) -> bytes:
    payload = encode(Advert(vrid, priority, 20, addresses), src, dst)
    if bad_checksum:
        payload = payload[:6] + bytes([payload[6] ^ 0xFF]) + payload[7:]
    return ip_header(src, dst, ttl, len(payload)) + payload


def _rw(node: Node) -> dict[str, Any]:
    return status(node.ns)["instances"]["rw"]


def _in_state(node: Node, state: str) -> bool:
    try:
        return bool(_rw(node)["state"] == state)
    except (subprocess.CalledProcessError, KeyError, ValueError):  # not up yet
        return False


def _summary_of(rw: dict[str, Any]) -> tuple[Any, ...]:
    return (
        rw["state"],
        rw["priority"],
        rw["held"],
        rw["master"]["is_self"],
        len(rw["transitions"]),
    )


class Observer:
    """AdvertObserver running in c's namespace, which drops all VRRP not from `router`."""

    def __init__(self, dlab: DaemonLab, router: str = "a") -> None:
        observer_filter(dlab.net.ns("c"), dlab.net.v4(router))
        self.obs: AdvertObserver = run_in_netns(
            dlab.net.ns("c"), AdvertObserver, dlab.net.v4(router)
        )
        self._thread = threading.Thread(target=self.obs.run, daemon=True)

    def __enter__(self) -> AdvertObserver:
        self._thread.start()
        return self.obs

    def __exit__(self, *exc: object) -> None:
        self.obs.stop()
        self._thread.join(5)
        self.obs.sock.close()


def test_a_flood_of_fuzzed_packets_changes_nothing_and_is_counted(dlab: DaemonLab) -> None:
    count = int(os.environ.get("PGVIP_FUZZ_PACKETS", "100000"))
    rate = float(os.environ.get("PGVIP_FUZZ_RATE", "20000")) or None
    dlab.start_standin("a", primary=200)
    _rp_filter_off(dlab, "a")
    node = dlab.start_pgvip("a", priority=200)
    wait_holder(dlab, ["a"])
    wait_for(lambda: _in_state(node, "MASTER"), what="a MASTER in /status")
    assert node.daemon is not None
    pid = node.daemon.pid
    before = _summary_of(_rw(node))
    assert before[:4] == ("MASTER", 200, True, True)
    assert sum(rejected(node.ns).values()) == 0
    transitions_before = node.transitions()
    stream = FuzzStream(
        VRID, VIP4, dlab.net.v4("a"), seed=int(os.environ.get("PGVIP_FUZZ_SEED", "14"))
    )
    packets: Iterator[tuple[bytes, str]] = iter(stream)
    pool = int(os.environ.get("PGVIP_FUZZ_POOL", "0"))
    if pool:  # replay a pre-generated pool: the sender is then much faster than the fuzzer
        packets = itertools.cycle(list(itertools.islice(stream, pool)))

    with Observer(dlab) as obs:
        time.sleep(1.0)
        cpu0, rss0, t0 = proc_cpu_seconds(pid), proc_rss_kib(pid), time.monotonic()
        result = run_in_netns(
            dlab.net.ns("b"), flood, packets, count, rate, timeout=count / 2000 + 120
        )
        t1 = time.monotonic()
        cpu1 = proc_cpu_seconds(pid)
        # Let the daemon drain its socket, then count.
        wait_for(
            lambda: sum(rejected(node.ns).values()) >= result.sent * 0.999,
            timeout=30,
            what="the daemon to count the flood",
        )
        time.sleep(1.0)
        t2 = time.monotonic()
    counted = rejected(node.ns)
    drops = raw_drops(node.ns)
    read = sum(counted.values()) - counted["overflow"]
    after = _rw(node)
    gap_flood = obs.max_gap(t0, t1)
    gap_all = obs.max_gap(t0 - 0.5, t2)
    summary = {
        "packets": result.sent,
        "send_errors": result.send_errors,
        "send_seconds": round(result.seconds, 3),
        "send_rate_pps": round(result.rate),
        "target_rate_pps": rate,
        "skipped_valid": stream.skipped_valid,
        "pool": pool or None,
        "daemon_counted": sum(counted.values()),
        "daemon_read": read,
        "kernel_rx_drops": drops,
        "daemon_read_rate_pps": round(read / max(t1 - t0, 1e-9)),
        "daemon_cpu_seconds": round(cpu1 - cpu0, 2),
        "daemon_cpu_share": round((cpu1 - cpu0) / max(t1 - t0, 1e-9), 3),
        "daemon_rss_kib": [rss0, proc_rss_kib(pid)],
        "own_adverts_seen": len([t for t in obs.times if t0 <= t <= t1]),
        "advert_max_gap_seconds_during_flood": round(gap_flood, 3),
        "advert_max_gap_seconds_around_flood": round(gap_all, 3),
        "advert_interval_seconds": ADVERT_INT,
        "expected_by_reason": dict(sorted(result.expected.items())),
        "counted_by_reason": dict(sorted((k, v) for k, v in counted.items() if v)),
        "state_after": _summary_of(after),
    }
    print("fuzz summary: " + json.dumps(summary, indent=1))
    out = os.environ.get("PGVIP_FUZZ_OUT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=1) + "\n")

    assert node.daemon.poll() is None, "the daemon died under the flood"
    assert result.sent == count
    # Every packet is counted: read and dropped by reason, or lost unread ("overflow", the
    # kernel's count of the same drops as /proc/net/raw, which can only trail it).
    assert counted["overflow"] <= drops
    assert result.sent * 0.999 <= sum(counted.values()) <= result.sent, "packets lost uncounted"
    for reason, n in counted.items():
        if reason != "overflow":
            assert n <= result.expected[reason], (reason, n, result.expected[reason])
    if drops == 0 and sum(counted.values()) == result.sent:
        assert counted == +result.expected
    # Nothing invalid reached the instance or changed it.
    assert _summary_of(after) == before
    assert dlab.holders() == ["a"]
    assert node.transitions() == transitions_before, "a transition happened during the flood"
    # One log line per reason and per 1000 packets, not one per packet.
    rejected_lines = [e for e in node.log_lines() if e.get("event") == "VRRP packet rejected"]
    assert len(rejected_lines) <= len(counted) + sum(counted.values()) // 1000
    # The master kept advertising: no gap above 3 advert intervals (RFC: a backup would
    # take over after 3 intervals and skew).
    assert gap_all < 3 * ADVERT_INT, f"a's adverts stopped for {gap_all:.2f}s during the flood"


def test_a_flooded_backup_keeps_hearing_its_master(dlab: DaemonLab) -> None:
    """b (pgvip, priority 200) is master, a (priority 100) its backup; junk floods both.
    A backup that reads too slowly would miss the master's adverts among the junk and take
    over: two holders. PGVIP_FUZZ_BACKUP_RATE sets the flood (0: as fast as possible)."""
    count = int(os.environ.get("PGVIP_FUZZ_BACKUP_PACKETS", "40000"))
    rate = float(os.environ.get("PGVIP_FUZZ_BACKUP_RATE", "8000")) or None
    for host in ("a", "b"):
        dlab.start_standin(host, primary=200)
        _rp_filter_off(dlab, host)
    master_node = dlab.start_pgvip("b", priority=200)
    wait_holder(dlab, ["b"])
    node = dlab.start_pgvip("a", priority=100)
    wait_for(lambda: _in_state(node, "BACKUP"), timeout=10, what="a BACKUP")
    time.sleep(1.0)
    transitions = node.transitions()
    stream = FuzzStream(VRID, VIP4, dlab.net.v4("a"), seed=15)
    packets: Iterator[tuple[bytes, str]] = itertools.cycle(list(itertools.islice(stream, 20000)))
    with HolderSampler(dlab) as sampler:
        result = run_in_netns(
            dlab.net.ns("c"), flood, packets, count, rate, timeout=count / 2000 + 120
        )
        time.sleep(1.0)
    counted = rejected(node.ns)
    summary = {
        "packets": result.sent,
        "send_rate_pps": round(result.rate),
        "target_rate_pps": rate,
        "backup_counted": sum(counted.values()),
        "backup_overflow": counted["overflow"],
        "expected_by_reason": dict(sorted(result.expected.items())),
        "counted_by_reason": dict(sorted((k, v) for k, v in counted.items() if v)),
        "backup_transitions_during_flood": node.transitions()[len(transitions) :],
        "holder_samples": sampler.samples,
        "max_holders": sampler.max_holders,
        "double_holder_samples": len(sampler.double),
        "holders_after": dlab.holders(),
    }
    print("backup flood summary: " + json.dumps(summary, indent=1))
    out = os.environ.get("PGVIP_FUZZ_BACKUP_OUT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=1) + "\n")
    assert node.daemon is not None and node.daemon.poll() is None
    assert master_node.daemon is not None and master_node.daemon.poll() is None
    assert sum(counted.values()) >= result.sent * 0.999
    assert node.transitions() == transitions, "the backup changed state under the flood"
    assert sampler.max_holders == 1, f"two holders at once: {sampler.double[:3]}"
    assert dlab.holders() == ["b"]


def test_invalid_adverts_do_not_reset_a_backups_master_down_timer(dlab: DaemonLab) -> None:
    """A spoofed valid master holds a in BACKUP; once it goes quiet, a takes over after
    Master_Down_Interval although near-valid adverts (higher priority, but wrong TTL,
    checksum, VRID or addresses) keep coming: they must not count as the master's."""
    dlab.start_standin("a", primary=200)
    _rp_filter_off(dlab, "a")
    bad = [
        _advert(254, ttl=254),
        _advert(254, ttl=1),
        _advert(254, bad_checksum=True),
        _advert(254, vrid=VRID + 1),
        _advert(254, addresses=(IPv4Address("192.0.2.99"),)),
        _advert(254, addresses=(VIP4, IPv4Address("192.0.2.99"))),
    ]
    reasons = [classify(d, VRID, frozenset([VIP4]), dlab.net.v4("a")) for d in bad]
    assert (
        reasons == ["bad_ttl", "bad_ttl", "bad_checksum", "unknown_vrid"] + ["address_mismatch"] * 2
    )
    good = _advert(254)
    stop_master, stop_junk = threading.Event(), threading.Event()
    last_valid: list[float] = []

    def master() -> None:
        while not stop_master.is_set():
            send_once([good])
            last_valid.append(time.monotonic())
            time.sleep(ADVERT_INT)

    def junk() -> None:
        while not stop_junk.is_set():
            send_once(bad)
            time.sleep(0.005)

    ns_b = dlab.net.ns("b")
    threads = [start_in_netns(ns_b, master), start_in_netns(ns_b, junk)]
    try:
        time.sleep(0.5)
        node = dlab.start_pgvip("a", priority=200)
        wait_for(lambda: _in_state(node, "BACKUP"), timeout=10, what="a BACKUP")
        time.sleep(2.0)
        rw = _rw(node)
        assert rw["master"]["address"] == str(SPOOF) and rw["master"]["priority"] == 254
        assert dlab.holders() == []
        stop_master.set()
        threads[0].result(5)
        quiet_from = last_valid[-1]
        wait_for(lambda: dlab.holders() == ["a"], timeout=5, what="a to take over")
        took = time.monotonic() - quiet_from
    finally:
        stop_master.set()
        stop_junk.set()
        for t in threads:
            t.result(5)
    # Master_Down_Interval = 3 * 0.2 + (256 - 200) / 256 * 0.2 = 0.64 s; the junk kept
    # coming all along (6 packets every 5 ms), so any of it counted as an advert would
    # have kept a in BACKUP.
    assert 0.6 < took < 0.64 + 0.6, f"takeover {took:.2f}s after the last valid advert"
    counted = rejected(node.ns)
    for reason in ("bad_ttl", "bad_checksum", "unknown_vrid", "address_mismatch"):
        assert counted[reason] > 100, (reason, counted)
    transitions = [(e["from"], e["to"]) for e in node.log_lines() if e.get("event") == "transition"]
    assert transitions == [("INIT", "BACKUP"), ("BACKUP", "MASTER")], transitions


def test_only_a_valid_higher_priority_advert_takes_the_vip(dlab: DaemonLab) -> None:
    """Both sides of "valid": near-valid higher-priority adverts change nothing; the valid
    one from an unknown source is obeyed (RFC 5798 has no authentication) and the VIP
    comes back once it stops."""
    dlab.start_standin("a", primary=200)
    _rp_filter_off(dlab, "a")
    node = dlab.start_pgvip("a", priority=200)
    wait_holder(dlab, ["a"])
    wait_for(lambda: _in_state(node, "MASTER"), what="a MASTER in /status")
    before = _summary_of(_rw(node))
    variants = {
        "bad_ttl": _advert(254, ttl=64),
        "bad_checksum": _advert(254, bad_checksum=True),
        "unknown_vrid": _advert(254, vrid=VRID + 1),
        "address_mismatch": _advert(254, addresses=(IPv4Address("192.0.2.99"),)),
    }
    ns_b = dlab.net.ns("b")
    for datagram in variants.values():
        for _ in range(10):
            run_in_netns(ns_b, send_once, [datagram] * 5)
            time.sleep(0.05)
    time.sleep(0.3)
    counted = rejected(node.ns)
    assert {r: counted[r] for r in variants} == dict.fromkeys(variants, 50)
    assert _summary_of(_rw(node)) == before
    assert dlab.holders() == ["a"]

    stop = threading.Event()

    def master() -> None:
        while not stop.is_set():
            send_once([_advert(254)])
            time.sleep(ADVERT_INT)

    spoofer = start_in_netns(ns_b, master)
    try:
        wait_holder(dlab, [], timeout=3)
        rw = _rw(node)
        assert rw["state"] == "BACKUP" and rw["master"]["address"] == str(SPOOF)
    finally:
        stop.set()
        spoofer.result(5)
    wait_holder(dlab, ["a"], timeout=3)
    reasons = [e.get("reason", "") for e in node.log_lines() if e.get("event") == "transition"]
    assert any(f"master {SPOOF} has higher priority 254" in r for r in reasons), reasons


def test_unicast_mode_drops_valid_adverts_from_non_peers(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    _rp_filter_off(dlab, "a")
    a, b = dlab.net.v4("a"), dlab.net.v4("b")
    node = dlab.start_pgvip(
        "a", priority=200, vrrp={"unicast_peers": [str(b)], "unicast_src": str(a)}
    )
    wait_holder(dlab, ["a"])
    wait_for(lambda: _in_state(node, "MASTER"), what="a MASTER in /status")
    before = _summary_of(_rw(node))
    # Valid in every other way, sent from c to a's address: c is not a configured peer.
    stranger = _advert(254, src=dlab.net.v4("c"), dst=a)
    spoofed = _advert(254, src=SPOOF, dst=a)
    for _ in range(20):
        run_in_netns(dlab.net.ns("c"), send_once, [stranger, spoofed])
        time.sleep(0.05)
    time.sleep(0.3)
    counted = rejected(node.ns)
    assert counted["not_peer"] == 40, counted
    assert _summary_of(_rw(node)) == before
    assert dlab.holders() == ["a"]
    assert Counter({k: v for k, v in counted.items() if v}) == Counter(not_peer=40)
