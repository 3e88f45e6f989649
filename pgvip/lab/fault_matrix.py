"""The fault matrix (issue 14): faults beyond the demo's three, each injected into a ready lab,
held, healed, and checked to end with exactly one RW holder on Patroni's leader.

Each fault is a demo scenario (same signature as `pgvip.lab.scenarios.RUNNERS`), so the demo's
probe, VIP sampler and table measure what a client saw: every path's gap and failed attempts,
the application-model writer's extra gap, and the most RW holders at any 20 ms sample.
`python -m pgvip.lab.fault_matrix` brings its own lab up, runs them all (or `--faults`), writes
the table and a JSON file, and brings the lab down again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pgvip.lab.demo_report import ScenarioResult
from pgvip.lab.fault_steps import HOLD, leader_of, replica_of, ro_director, settle, start_fault
from pgvip.lab.fault_strangers import ROWS as STRANGER_ROWS
from pgvip.lab.scenarios import RUNNERS, DemoError, Narrator

ETCD_OUTAGE = 25.0  # longer than Patroni's ttl (20 s in the lab)
LOSS_TABLE = "pgvip_fault_loss"
ISOLATE_TABLE = "pgvip_fault_isolate"
ISOLATED = 25.0  # longer than Patroni's ttl
# A fault that puts a second RW holder there by hand: the sampler's count is the injection.
INJECTS_A_HOLDER = frozenset({"vip-added-on-replica"})
# A fault whose stranger (outside the cluster) answers ARP for the RW VIP beside the holder:
# two MACs at the ARP level are the injection there.
INJECTS_AN_ARP_HOLDER = frozenset({"vip-added-on-replica", "pgvip-rogue-other-peers"})


def _pgvip_crash(pick: Callable[[Any], str], what: str) -> Callable[..., None]:
    def run(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
        node = pick(lab)
        start_fault(result, tl, node, f"kill -9 pgvip on {node} ({what}); then, as systemd would, "
                                 "`pgvip release` and a restart 1 s later")  # fmt: skip
        lab.kill(node, "pgvip")
        config = str(lab.pgvip_config_path(node))
        lab.run(node, [str(lab.venv_bin / "pgvip"), "release", "--config", config], timeout=10)
        time.sleep(1.0)  # RestartSec
        lab.start(node, "pgvip")
        settle(lab, tl, timeout=15.0)

    return run


def _patroni_sigstop(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    text = (f"SIGSTOP Patroni on leader {leader} for {HOLD:.0f} s (its REST API accepts "
            "connections but never answers)")  # fmt: skip
    start_fault(result, tl, leader, text)
    lab.signal(leader, "patroni", signal.SIGSTOP)
    try:
        time.sleep(HOLD)
    finally:
        lab.signal(leader, "patroni", signal.SIGCONT)
    tl.event(f"SIGCONT Patroni on {leader}")
    settle(lab, tl)


def _postgres_kill(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    start_fault(result, tl, leader, f"kill -9 the postmaster on leader {leader} (Patroni runs on)")
    lab.kill(leader, "postgres")
    settle(lab, tl, timeout=30.0)


def _etcd_outage(failsafe: bool) -> Callable[..., None]:
    def run(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
        leader = leader_of(lab)
        if not failsafe:
            _patch_config(lab, leader, {"failsafe_mode": False})
        try:
            start_fault(result, tl, f"failsafe {'on' if failsafe else 'off'}",
                   f"stop etcd for {ETCD_OUTAGE:.0f} s (Patroni's ttl is 20 s), failsafe_mode "
                   f"{'on' if failsafe else 'off'}")  # fmt: skip
            lab.stop("etcd", "etcd")
            time.sleep(ETCD_OUTAGE)
            lab.start("etcd", "etcd")
            tl.event("etcd started again")
            settle(lab, tl, timeout=30.0)
        finally:
            if not failsafe:
                _patch_config(lab, leader_of(lab), {"failsafe_mode": True})

    return run


def _patch_config(lab: Any, node: str, change: dict[str, Any]) -> None:
    url = f"{lab.layout.patroni_url(node)}/config"
    out = lab.run(node, ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                         "-X", "PATCH", "-d", json.dumps(change), url], timeout=10)  # fmt: skip
    if out.stdout.strip() != "200":
        raise DemoError(f"PATCH {url} {change} answered {out.stdout.strip() or out.stderr}")
    time.sleep(2.0)  # Patroni applies dynamic config on its next loop


def _leader_link_down(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    start_fault(result, tl, leader, f"leader {leader} cut off the switch for {HOLD:.0f} s")
    lab.partition(leader)
    try:
        time.sleep(HOLD)
    finally:
        lab.heal(leader)
    tl.event(f"{leader} back on the switch")
    settle(lab, tl, timeout=30.0)


def _loss(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    """This kernel has no netem (no sch_netem: no delay); nftables drops 20 % at random."""
    leader = leader_of(lab)
    text = (f"20 % loss of VRRP packets in and out of leader {leader} for {HOLD:.0f} s "
            "(nftables numgen; no netem here: no delay)")  # fmt: skip
    start_fault(result, tl, leader, text)
    rules = (f"table inet {LOSS_TABLE} {{\n"
             " chain in { type filter hook input priority -10; meta l4proto 112 numgen random"
             " mod 100 < 20 drop; }\n"
             " chain out { type filter hook output priority -10; meta l4proto 112 numgen random"
             " mod 100 < 20 drop; }\n}\n")  # fmt: skip
    lab.run(leader, ["nft", "-f", "-"], input=rules, check=True, timeout=10)
    try:
        time.sleep(HOLD)
    finally:
        lab.run(leader, ["nft", "delete", "table", "inet", LOSS_TABLE], timeout=10)
    tl.event("loss removed")
    settle(lab, tl, timeout=30.0)


def _vip_deleted(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    start_fault(result, tl, leader, f"delete the RW VIP by hand on holder {leader}")
    lab.run(leader, ["ip", "addr", "del", f"{lab.layout.rw_vip}/{lab.layout.subnet.prefixlen}",
                     "dev", "eth0"], check=True, timeout=5)  # fmt: skip
    settle(lab, tl)


def _vip_added(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    node = replica_of(lab, leader)
    start_fault(
        result, tl, node, f"add the RW VIP by hand on replica {node} (two holders, by hand)"
    )
    lab.run(node, ["ip", "addr", "add", f"{lab.layout.rw_vip}/{lab.layout.subnet.prefixlen}",
                   "dev", "eth0"], check=True, timeout=5)  # fmt: skip
    settle(lab, tl)


def _patroni_stop(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    """What an operator does (systemctl stop patroni): SIGTERM; Patroni stops PostgreSQL and
    gives up the leader key, so a replica takes over without waiting for the ttl."""
    leader = leader_of(lab)
    start_fault(result, tl, leader, f"stop Patroni cleanly (SIGTERM) on leader {leader}; "
                                    f"start it again {HOLD:.0f} s later")  # fmt: skip
    lab.stop(leader, "patroni", timeout=30)
    try:
        time.sleep(HOLD)
    finally:
        lab.start(leader, "patroni")
    tl.event(f"Patroni started again on {leader}")
    settle(lab, tl, timeout=60.0)


def _isolated(from_peers: bool) -> Callable[..., None]:
    """nftables drops in the leader's namespace: from its peers (VRRP included) but not etcd,
    or from etcd but not its peers. Held past Patroni's ttl."""

    def run(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
        leader = leader_of(lab)
        layout = lab.layout
        peers = [str(layout.node_ip(n)) for n in layout.node_names() if n != leader]
        away = ", ".join(peers) if from_peers else str(layout.etcd_ip)
        extra = " ip daddr 224.0.0.18 drop;" if from_peers else ""  # VRRP goes to the peers
        hook = "type filter hook {} priority -10;"
        rules = (f"table inet {ISOLATE_TABLE} {{\n"
                 f" chain in {{ {hook.format('input')} ip saddr {{ {away} }} drop; }}\n"
                 f" chain out {{ {hook.format('output')} ip daddr {{ {away} }} drop;{extra} }}\n"
                 "}\n")  # fmt: skip
        what = "its peers (VRRP too), not from etcd" if from_peers else "etcd, not its peers"
        text = f"leader {leader} isolated from {what} for {ISOLATED:.0f} s (nftables, its netns)"
        start_fault(result, tl, leader, text)
        lab.run(leader, ["nft", "-f", "-"], input=rules, check=True, timeout=10)
        try:
            time.sleep(ISOLATED)
        finally:
            lab.run(leader, ["nft", "delete", "table", "inet", ISOLATE_TABLE], timeout=10)
        tl.event(f"{leader} reachable again")
        settle(lab, tl, timeout=60.0)

    return run


def _director(lab: Any) -> str:
    found = ro_director(lab)
    if found is None:
        raise DemoError("no single RO director to kill")
    return found


FAULTS: dict[str, Callable[..., None]] = {
    "pgvip-kill-holder": _pgvip_crash(leader_of, "the RW holder"),
    "pgvip-kill-director": _pgvip_crash(_director, "the RO director"),
    "patroni-sigstop-leader": _patroni_sigstop,
    "postgres-kill-leader": _postgres_kill,
    "etcd-outage-failsafe": _etcd_outage(True),
    "etcd-outage-no-failsafe": _etcd_outage(False),
    "leader-link-down": _leader_link_down,
    "vrrp-loss-leader": _loss,
    "vip-deleted-on-holder": _vip_deleted,
    "vip-added-on-replica": _vip_added,
    "patroni-stop-leader": _patroni_stop,
    "leader-isolated-from-peers": _isolated(True),
    "leader-isolated-from-etcd": _isolated(False),
    **STRANGER_ROWS,
}
ALL_RUNNERS = {**RUNNERS, **FAULTS}
FAST = ("vip-deleted-on-holder", "vip-added-on-replica", "pgvip-kill-holder",
        "pgvip-rogue-other-vip", "keepalived-above-pgvip")  # fmt: skip


def record(results: Sequence[ScenarioResult]) -> list[dict[str, Any]]:
    """The results as JSON-ready dicts (failures with their window)."""
    out = []
    for r in results:
        doc = dataclasses.asdict(r)
        for key, value in list(doc.items()):
            if key.endswith("_failures") and value is not None:
                found = getattr(r, key)
                doc[key] = {**value, "window": found.window}
        doc["ok"] = r.ok
        doc["injects_a_holder"] = r.name in INJECTS_A_HOLDER
        doc["injects_an_arp_holder"] = r.name in INJECTS_AN_ARP_HOLDER
        out.append(doc)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgvip.lab.fault_matrix",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--prefix", default="pgvf")
    parser.add_argument("--subnet", default="10.20.37.0/24")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help="comma-separated (default: all): " + ", ".join(FAULTS))  # fmt: skip
    parser.add_argument("--out", default="docs/fault-matrix", help="where the JSON goes")
    args = parser.parse_args(argv)
    from pgvip.lab.cluster import Lab
    from pgvip.lab.demo import run_demo
    from pgvip.lab.layout import LabLayout

    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in ALL_RUNNERS]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}")
    lab = Lab(LabLayout.create(prefix=args.prefix, subnet=args.subnet, nodes=3), pgvip=True)
    results: list[ScenarioResult] = []
    started = time.time()
    try:
        lab.up(timeout=120, progress=lambda m: print(f"lab: {m}", flush=True))
        code = run_demo(lab, scenarios=faults, runners=ALL_RUNNERS, record=results)
    finally:
        lab.down()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"run-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(started))}.json"
    path.write_text(json.dumps({"started": started, "faults": faults,
                                "results": record(results)}, indent=1) + "\n")  # fmt: skip
    print(f"results: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
