"""The L3 (BGP) mode's benchmark (issue 16): switchovers and kill -9s of pgvip on the leader
in the routed fabric (pgvip.lab.bgp_fabric), measured by the application-model writer and its
direct twin from the client behind the router, and by the routers' forwarding tables sampled
every 20 ms.

Per switchover: the app writer's gap through the RW VIP, the twin's, the extra (what L3 mode
adds over Patroni's own gap), when the route moved on r1, and the withdraw delay (the old
leader's pgvip logs "route withdrawn" -> r1's FIB has no route from it). Per kill -9: the time
from the kill to r1 dropping the route (BIRD dies with pgvip), and from the restart to the route
back. Any sample with two RW next hops is counted.

`python -m benchmarks.l3` brings a lab of its own up (prefix pgvl, 10.20.47.0/24) and down,
prints one line per event and a summary, and writes `l3-<UTC time>.json`. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.analysis import app_record
from benchmarks.recorder import REPO_ROOT

SETTLE = 12.0  # seconds an event's window lasts after it is started
FAILOVER_WINDOW = 32.0  # Patroni's ttl (20 s) plus the promotion and a settled tail


def _probe(lab: Any, f: Any, interval: float) -> subprocess.Popen[str]:
    python = str(lab.venv_bin / "python")
    argv = ["ip", "netns", "exec", f.client_ns, python, "-m", "pgvip.lab.probe",
            "--subnet", str(lab.layout.subnet), "--rw", str(f.rw_vip), "--ro", str(f.ro_vip),
            "--leader", "--app", "--interval", str(interval), "--timeout", "1.0"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                            start_new_session=True)  # fmt: skip


def _logged_at(log: Path, event: str, after_wall: float, offset: float) -> float | None:
    """Monotonic time of the first RW `event` in a pgvip log after `after_wall` (epoch);
    `offset` is time.time() - time.monotonic()."""
    for line in log.read_text(errors="replace").splitlines():
        if f'"{event}"' not in line or '"instance": "rw"' not in line:
            continue
        doc = json.loads(line)
        wall = datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00")).timestamp()
        if wall >= after_wall:
            return wall - offset
    return None


def _route_change(sampler: Any, vip: Any, since: float, until: float) -> float | None:
    """First sample time in [since, until) at which r1's route to `vip` differs from before."""
    before = None
    for s in sampler.samples:
        if s.router != "r1" or s.t >= until:
            continue
        hops = s.hops.get(str(vip), ())
        if s.t < since:
            before = hops
        elif before is not None and hops != before:
            return s.t
    return None


def _first_gone(sampler: Any, vip: Any, hop: str, since: float) -> float | None:
    for s in sampler.samples:
        if s.router == "r1" and s.t >= since and hop not in s.hops.get(str(vip), ()):
            return s.t
    return None


def _first_with(sampler: Any, vip: Any, hop: str, since: float) -> float | None:
    for s in sampler.samples:
        if s.router == "r1" and s.t >= since and hop in s.hops.get(str(vip), ()):
            return s.t
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.l3",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--switchovers", type=int, default=5)
    parser.add_argument(
        "--failovers",
        type=int,
        default=2,
        help="kill -9 of the leader's Patroni and PostgreSQL (waits out the ttl)",
    )
    parser.add_argument("--kills", type=int, default=3, help="kill -9 of pgvip on the leader")
    parser.add_argument(
        "--silences",
        type=int,
        default=3,
        help="a replica cut off the switch: its RO route must go after hold_time",
    )
    parser.add_argument(
        "--bfd", action="store_true", help="BFD on the sessions (100 ms x 3) on nodes and routers"
    )
    parser.add_argument("--interval", type=float, default=0.05, help="app writer's pace, s")
    parser.add_argument("--prefix", default="pgvl")
    parser.add_argument("--subnet", default="10.20.47.0/24")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    parser.add_argument("--samples", help="also write every probe sample (JSON lines) here")
    args = parser.parse_args(argv)
    from pgvip.lab.bgp_fabric import Fabric, FabricBuilder
    from pgvip.lab.cluster import Lab
    from pgvip.lab.layout import LabLayout
    from pgvip.lab.route_sampler import RouteSampler

    lab = Lab(LabLayout.create(prefix=args.prefix, subnet=args.subnet, nodes=3), pgvip=False)
    builder = FabricBuilder(Fabric(lab))
    f = builder.f
    offset = time.time() - time.monotonic()
    samples: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    try:
        lab.up(timeout=120, progress=lambda m: print(f"lab: {m}", flush=True))
        builder.up(bfd=args.bfd)
        builder.start_pgvip()
        routers = {r: f.router_ns(r) for r in f.router_names()}
        with RouteSampler(routers, [f.rw_vip, f.ro_vip]) as sampler:
            probe = _probe(lab, f, args.interval)
            reader = threading.Thread(target=_read, args=(probe, samples), daemon=True)
            reader.start()
            try:
                _wait_route(lab, f, sampler)
                time.sleep(3.0)
                for i in range(args.switchovers):
                    events.append(_switchover(lab, f, sampler, samples, offset, i))
                for _ in range(args.failovers):
                    events.append(_failover(lab, f, sampler, samples))
                for i in range(args.kills):
                    events.append(_kill(lab, f, sampler, i))
                for i in range(args.silences):
                    events.append(_silence(lab, f, sampler, i))
                dual = len(sampler.dual(f.rw_vip))
                n_samples = len(sampler.samples)
                route_log = list(sampler.samples) if args.samples else []
            finally:
                probe.terminate()
                probe.wait(5)
    finally:
        try:
            lab.down()
        finally:
            builder.down()
    summary = _summary(events, dual, n_samples)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = out_dir / f"l3-{stamp}.json"
    path.write_text(json.dumps({"summary": summary, "events": events,
                                "args": vars(args)}, indent=1) + "\n")  # fmt: skip
    if args.samples:
        with open(args.samples, "w") as out:
            out.writelines(json.dumps(x) + "\n" for x in samples)
            for rs in route_log:
                out.write(json.dumps({"route": rs.router, "t": rs.t, "hops": rs.hops}) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"written: {path}")
    return 0


def _read(probe: subprocess.Popen[str], samples: list[dict[str, Any]]) -> None:
    assert probe.stdout is not None
    for line in probe.stdout:
        try:
            samples.append(json.loads(line))
        except ValueError:
            continue


def _wait_route(lab: Any, f: Any, sampler: Any) -> None:
    lab.wait_ready(timeout=60, progress=lambda _m: None, vip=False)
    leader = lab.leader()
    hop = {str(lab.layout.node_ip(leader))}
    if sampler.wait_for("r1", f.rw_vip, hop, 20.0) is None:
        raise SystemExit(f"the RW route never reached r1: {sampler.latest('r1')}")


def _switchover(lab: Any, f: Any, sampler: Any, samples: list[dict[str, Any]], offset: float,
                i: int) -> dict[str, Any]:  # fmt: skip
    _wait_route(lab, f, sampler)
    old = lab.leader()
    candidate = sorted(n for n in lab.layout.node_names() if n != old)[i % 2]
    t_event, wall = time.monotonic(), time.time()
    lab.switchover(old, candidate)
    time.sleep(max(0.0, t_event + SETTLE - time.monotonic()))
    t_end = time.monotonic()
    app = app_record(samples, t_event, t_end, since=t_event - 5.0).get("persistent", {})
    withdrawn = _logged_at(lab.log_path(old, "pgvip"), "VIP removed: route withdrawn", wall,
                           offset)  # fmt: skip
    announced = _logged_at(lab.log_path(candidate, "pgvip"), "VIP added: route announced", wall,
                           offset)  # fmt: skip
    gone = _first_gone(sampler, f.rw_vip, str(lab.layout.node_ip(old)), t_event)
    arrived = _first_with(sampler, f.rw_vip, str(lab.layout.node_ip(candidate)), t_event)
    moved = _route_change(sampler, f.rw_vip, t_event, t_end)
    ev = {
        "kind": "switchover", "from": old, "to": candidate,
        "app_through": app.get("through", {}).get("gap"),
        "app_direct": app.get("direct", {}).get("gap"),
        "app_extra": app.get("extra"),
        "app_valid": app.get("valid"),
        "route_moved_after": None if moved is None else round(moved - t_event, 3),
        "withdraw_delay": None if withdrawn is None or gone is None
        else round(gone - withdrawn, 3),
        "announce_delay": None if announced is None or arrived is None
        else round(arrived - announced, 3),
        "old_withdrawn_after": None if withdrawn is None else round(withdrawn - t_event, 3),
        "new_announced_after": None if announced is None else round(announced - t_event, 3),
        "dual_samples": len(sampler.dual(f.rw_vip, since=t_event)),
    }  # fmt: skip
    print(f"switchover {old}->{candidate}: {ev}", flush=True)
    return ev


def _failover(lab: Any, f: Any, sampler: Any, samples: list[dict[str, Any]]) -> dict[str, Any]:
    _wait_route(lab, f, sampler)
    old = lab.leader()
    t_event = time.monotonic()
    lab.kill(old, "patroni")  # Patroni first: it would restart a killed PostgreSQL at once
    lab.kill(old, "postgres")
    time.sleep(FAILOVER_WINDOW)
    app = app_record(samples, t_event, time.monotonic(), since=t_event - 5.0).get("persistent", {})
    new = lab.leader()
    ev = {"kind": "failover", "from": old, "to": new,
          "app_through": app.get("through", {}).get("gap"),
          "app_direct": app.get("direct", {}).get("gap"),
          "app_extra": app.get("extra"), "app_valid": app.get("valid"),
          "dual_samples": len(sampler.dual(f.rw_vip, since=t_event))}  # fmt: skip
    print(f"failover {old}->{new}: {ev}", flush=True)
    lab.start(old, "patroni")
    lab.wait_ready(timeout=90, progress=lambda _m: None, vip=False)
    return ev


def _kill(lab: Any, f: Any, sampler: Any, i: int) -> dict[str, Any]:
    _wait_route(lab, f, sampler)
    leader = lab.leader()
    hop = str(lab.layout.node_ip(leader))
    t_kill = time.monotonic()
    lab.kill(leader, "pgvip")
    gone = sampler.wait_for("r1", f.rw_vip, set(), 5.0)
    t_start = time.monotonic()
    lab.start(leader, "pgvip")
    back = sampler.wait_for("r1", f.rw_vip, {hop}, 20.0)
    ev = {"kind": "kill-pgvip", "node": leader,
          "withdrawn_after_kill": None if gone is None else round(gone, 3),
          "kill_to_wait_start": round(t_start - t_kill, 3),
          "announced_after_restart": None if back is None else round(back, 3)}  # fmt: skip
    print(f"kill -9 pgvip on {leader}: {ev}", flush=True)
    time.sleep(2.0)
    return ev


def _silence(lab: Any, f: Any, sampler: Any, i: int) -> dict[str, Any]:
    _wait_route(lab, f, sampler)
    leader = lab.leader()
    node = sorted(n for n in lab.layout.node_names() if n != leader)[i % 2]
    replicas = {str(lab.layout.node_ip(n)) for n in lab.layout.node_names() if n != leader}
    hop = str(lab.layout.node_ip(node))
    lab.partition(node)
    try:
        gone = sampler.wait_for("r1", f.ro_vip, replicas - {hop}, 10.0)
    finally:
        lab.heal(node)
    back = sampler.wait_for("r1", f.ro_vip, replicas, 20.0)
    ev = {"kind": "silent-replica", "node": node,
          "ro_route_gone_after": None if gone is None else round(gone, 3),
          "ro_route_back_after_heal": None if back is None else round(back, 3)}  # fmt: skip
    print(f"{node} cut off: {ev}", flush=True)
    time.sleep(2.0)
    return ev


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"n": len(values), "p50": round(statistics.median(values), 3),
            "max": round(max(values), 3)}  # fmt: skip


def _summary(events: list[dict[str, Any]], dual: int, n_samples: int) -> dict[str, Any]:
    sw = [e for e in events if e["kind"] == "switchover"]
    kills = [e for e in events if e["kind"] == "kill-pgvip"]
    fo = [e for e in events if e["kind"] == "failover" and e["app_valid"]]
    silent = [e for e in events if e["kind"] == "silent-replica"]

    def col(rows: list[dict[str, Any]], key: str) -> list[float]:
        return [float(r[key]) for r in rows if r.get(key) is not None]

    return {
        "switchover_app_extra": _stats(col([e for e in sw if e["app_valid"]], "app_extra")),
        "switchover_app_direct_gap": _stats(col(sw, "app_direct")),
        "switchover_withdraw_delay": _stats(col(sw, "withdraw_delay")),
        "switchover_announce_delay": _stats(col(sw, "announce_delay")),
        "failover_app_extra": _stats(col(fo, "app_extra")),
        "failover_app_direct_gap": _stats(col(fo, "app_direct")),
        "kill_withdrawn_after": _stats(col(kills, "withdrawn_after_kill")),
        "kill_announced_after_restart": _stats(col(kills, "announced_after_restart")),
        "silent_replica_route_gone_after": _stats(col(silent, "ro_route_gone_after")),
        "rw_dual_samples": dual,
        "route_samples": n_samples,
    }


if __name__ == "__main__":
    sys.exit(main())
