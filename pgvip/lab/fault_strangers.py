"""Fault-matrix rows with a VRRP speaker on a host outside the cluster: a keepalived on the RW
VIP's VRID (pgvip yields to a higher priority and takes over from a lower one), and a
misconfigured second pgvip on that VRID (another VIP, or another unicast peer list).

The stranger runs in the lab's etcd namespace, a host on the same switch that is no
PostgreSQL node; a client sent there for the RW VIP is refused (no PostgreSQL). It is started
and stopped by its PID and process group, and its address is removed when the row ends,
whatever happened. Each row is a demo scenario, like pgvip.lab.fault_matrix's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pgvip.lab import netns, processes
from pgvip.lab.demo_report import ScenarioResult
from pgvip.lab.fault_steps import HOLD, leader_of, settle, start_fault
from pgvip.lab.render import RW_PRIORITY, RW_VRID, pgvip_config
from pgvip.lab.scenarios import DemoError, Narrator

HOST = "etcd"  # the stranger's host: on the switch, outside the cluster
KEEPALIVED_ABOVE = 250  # above pgvip's RW priority (200)
KEEPALIVED_BELOW = 100
OTHER_VIP_HOST = 60  # the misconfigured pgvip's VIP: .60 instead of .50
FOREIGN_PEERS = (71, 72)  # its unicast peers: addresses of no lab host

KEEPALIVED_CONF = """\
global_defs {{
    vrrp_version 3
    router_id pgvip-lab-stranger
}}
vrrp_instance VI_STRANGER {{
    state BACKUP
    interface eth0
    virtual_router_id {vrid}
    priority {priority}
    advert_int 0.2
    virtual_ipaddress {{
        {vip}/{prefixlen}
    }}
}}
"""


def _stop(proc: processes.ProcessId) -> None:
    """SIGTERM the stranger, then its whole process group (keepalived forks a VRRP child)."""
    processes.terminate(proc, signal.SIGTERM, timeout=10.0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def stranger(lab: Any, name: str, argv: Sequence[str], vips: Sequence[str]) -> Iterator[Any]:
    """Run `argv` on the stranger's host until the block ends (or `handle.stop()`); then make
    sure `vips` are gone from that host."""
    ns = lab.layout.namespace(HOST)
    proc = processes.spawn(netns.exec_argv(ns, argv), lab.log_path(HOST, name),
                           cwd=lab.layout.base_dir)  # fmt: skip

    class Handle:
        stopped = False

        def stop(self) -> None:
            if not self.stopped:
                self.stopped = True
                _stop(proc)

    handle = Handle()
    try:
        time.sleep(0.3)
        if not processes.is_alive(proc):
            log = processes.tail(lab.log_path(HOST, name), 10)
            raise DemoError(f"{name} on {HOST} exited at once: {log}")
        yield handle
    finally:
        handle.stop()
        prefixlen = lab.layout.subnet.prefixlen
        for vip in vips:
            lab.run(HOST, ["ip", "addr", "del", f"{vip}/{prefixlen}", "dev", "eth0"], timeout=5)


def _keepalived(lab: Any, priority: int) -> tuple[list[str], list[str]]:
    binary = shutil.which("keepalived") or "/usr/sbin/keepalived"
    if not Path(binary).exists():
        raise DemoError("keepalived is not installed (apt-get install keepalived)")
    workdir = lab.layout.base_dir / "stranger-keepalived"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "keepalived.conf"
    layout = lab.layout
    conf.write_text(KEEPALIVED_CONF.format(vrid=RW_VRID, priority=priority, vip=layout.rw_vip,
                                           prefixlen=layout.subnet.prefixlen))  # fmt: skip
    argv = [binary, "--dont-fork", "--log-console", "--log-detail", "--vrrp", "-f", str(conf),
            "-p", str(workdir / "keepalived.pid"), "-r", str(workdir / "vrrp.pid")]  # fmt: skip
    return argv, [str(layout.rw_vip)]


def _holds(lab: Any, host: str) -> bool:
    out = lab.run(host, ["ip", "-br", "-4", "addr", "show", "dev", "eth0"], timeout=5).stdout
    return f" {lab.layout.rw_vip}/" in f" {out}"


def _wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise DemoError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - t0


def _keepalived_above(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    argv, vips = _keepalived(lab, KEEPALIVED_ABOVE)
    start_fault(result, tl, f"keepalived {KEEPALIVED_ABOVE} > pgvip {RW_PRIORITY}",
           f"keepalived on {HOST} (outside the cluster), VRID {RW_VRID}, priority "
           f"{KEEPALIVED_ABOVE} above pgvip's {RW_PRIORITY}, for {HOLD:.0f} s")  # fmt: skip
    with stranger(lab, "keepalived", argv, vips) as ka:
        took = _wait("keepalived taking the RW VIP", lambda: _holds(lab, HOST), 10.0)
        _wait(f"pgvip on {leader} yielding", lambda: not _holds(lab, leader), 5.0)
        tl.event(f"keepalived holds the RW VIP ({took:.2f} s); pgvip on {leader} yielded")
        time.sleep(HOLD)
        ka.stop()  # SIGTERM: keepalived sends priority 0
        tl.event("keepalived stopped (SIGTERM: priority 0)")
    settle(lab, tl, timeout=10.0)


def _keepalived_below(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
    leader = leader_of(lab)
    argv, vips = _keepalived(lab, KEEPALIVED_BELOW)
    with stranger(lab, "keepalived", argv, vips):
        time.sleep(2.0)  # a BACKUP under pgvip's adverts: it must not take the VIP
        if _holds(lab, HOST):
            raise DemoError(f"keepalived at priority {KEEPALIVED_BELOW} took the RW VIP "
                            f"from pgvip at {RW_PRIORITY}")  # fmt: skip
        start_fault(result, tl, f"keepalived {KEEPALIVED_BELOW} < pgvip {RW_PRIORITY}",
               f"keepalived on {HOST} as a lower-priority backup ({KEEPALIVED_BELOW}); stop "
               f"pgvip on {leader} (SIGTERM), restart it {HOLD:.0f} s later")  # fmt: skip
        lab.stop(leader, "pgvip")
        took = _wait("keepalived taking the RW VIP", lambda: _holds(lab, HOST), 10.0)
        tl.event(f"keepalived holds the RW VIP ({took:.2f} s after pgvip's SIGTERM)")
        time.sleep(HOLD)
        lab.start(leader, "pgvip")
        back = _wait(f"pgvip on {leader} taking over", lambda: _holds(lab, leader), 20.0)
        _wait("keepalived yielding", lambda: not _holds(lab, HOST), 5.0)
        tl.event(f"pgvip on {leader} took over from keepalived {back:.2f} s after its start")
        settle(lab, tl, timeout=10.0)
    tl.event("keepalived stopped")


def _rogue_pgvip(lab: Any, leader: str, name: str, **overrides: Any) -> list[str]:
    """A pgvip on the stranger's host whose Patroni check asks the leader's REST API (so it
    believes it may hold the RW VIP), with the lab's settings and `overrides`."""
    layout = lab.layout
    text = pgvip_config(layout, leader, ro=False,
                        patroni={"url": layout.patroni_url(leader)}, **overrides)  # fmt: skip
    path = layout.base_dir / f"stranger-{name}.toml"
    path.write_text(text)
    return [str(lab.venv_bin / "pgvip"), "run", "--config", str(path)]


def _metric(lab: Any, node: str, name: str, label: str = "") -> int:
    """The sum of metric `name` (lines containing `label`) on a node's pgvip, -1 if unknown."""
    out = lab.run(node, ["curl", "-s", "-m", "3", "http://127.0.0.1:8010/metrics"], timeout=10)
    total, seen = 0.0, False
    for line in out.stdout.splitlines():
        if line.startswith(name) and label in line:
            total, seen = total + float(line.rsplit(" ", 1)[1]), True
    return int(total) if seen else -1


def _rogue(kind: str) -> Callable[..., None]:
    def run(lab: Any, tl: Narrator, result: ScenarioResult) -> None:
        leader = leader_of(lab)
        layout = lab.layout
        base = layout.subnet.network_address
        src = str(layout.host_ip(HOST))
        if kind == "other-vip":
            other = base + OTHER_VIP_HOST
            rw = {"vip": f"{other}/{layout.subnet.prefixlen}"}
            argv = _rogue_pgvip(lab, leader, "pgvip-other-vip", rw=rw)
            vips = [str(other)]
            text = (f"a second pgvip on {HOST} (outside the cluster), VRID {RW_VRID}, another "
                    f"VIP ({other}), its Patroni check says primary, for {HOLD:.0f} s")  # fmt: skip
        else:
            peers = [str(base + h) for h in FOREIGN_PEERS]
            vrrp = {"unicast_src": src, "unicast_peers": peers}
            argv = _rogue_pgvip(lab, leader, "pgvip-unicast", vrrp=vrrp)
            vips = [str(layout.rw_vip)]
            text = (f"a second pgvip on {HOST} (outside the cluster), VRID {RW_VRID}, same "
                    f"VIP, unicast with another peer list ({', '.join(peers)}), its Patroni "
                    f"check says primary, for {HOLD:.0f} s")  # fmt: skip
        rejected0 = _metric(lab, leader, "pgvip_vrrp_packets_rejected_total", "address_mismatch")
        conflicts0 = _metric(lab, leader, "pgvip_vip_conflicts_total")
        start_fault(result, tl, kind, text)
        try:
            with stranger(lab, "pgvip", argv, vips) as rogue:
                time.sleep(HOLD)
                rogue.stop()
                tl.event("second pgvip stopped (SIGTERM, then `pgvip release` as systemd does)")
        finally:  # its stale-ARP guard (nftables) and anything it left on that host
            lab.run(HOST, [argv[0], "release", "--config", argv[-1]], timeout=10)
        rejected = _metric(lab, leader, "pgvip_vrrp_packets_rejected_total", "address_mismatch")
        conflicts = _metric(lab, leader, "pgvip_vip_conflicts_total")
        result.detail = (f"{kind}; on {leader}: +{rejected - rejected0} address_mismatch "
                         f"drops, +{conflicts - conflicts0} conflicts")  # fmt: skip
        settle(lab, tl, timeout=30.0)

    return run


ROWS: dict[str, Callable[..., None]] = {
    "keepalived-above-pgvip": _keepalived_above,
    "keepalived-below-pgvip": _keepalived_below,
    "pgvip-rogue-other-vip": _rogue("other-vip"),
    "pgvip-rogue-other-peers": _rogue("other-peers"),
}
