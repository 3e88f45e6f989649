"""Two pgvip instances per host (two Patroni clusters, x and y: other VRIDs, VIPs, status ports
and `instance.name`) in namespaces a and b: stopping, killing and releasing one leaves the
other's VIPs, nftables tables and forwarding alone, and the other keeps serving.

Both clusters have their leader on a, so a holds both RW VIPs and b directs both RO VIPs (two
nftables director tables, both needing ip_forward). The only backend is the leader (fallback
primary): a TCP server on a:5432 that answers "a"; the client runs in c.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.daemon.conftest import (
    PGVIP,
    REPO,
    DaemonLab,
    has_address,
    render_config,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKEND = (
    "import socketserver\n"
    "class H(socketserver.BaseRequestHandler):\n"
    "    def handle(self):\n"
    "        self.request.sendall(b'a')\n"
    "socketserver.ThreadingTCPServer.allow_reuse_address = True\n"
    "socketserver.ThreadingTCPServer(('0.0.0.0', 5432), H).serve_forever()\n"
)
CLIENT = (
    "import socket, sys\n"
    "try:\n"
    "    s = socket.create_connection((sys.argv[1], 5432), timeout=1)\n"
    "    s.settimeout(1)\n"
    "    print(s.recv(8).decode())\n"
    "except OSError as exc:\n"
    "    print('error', exc)\n"
)


@dataclass(frozen=True)
class Cluster:
    name: str
    rw: str
    ro: str
    rw_vrid: int
    ro_vrid: int
    patroni_port: int
    status_port: int


X = Cluster("x", "192.0.2.50", "192.0.2.49", 50, 51, 8008, 8010)
Y = Cluster("y", "192.0.2.60", "192.0.2.59", 60, 61, 8018, 8020)


class Host:
    """One namespace of the lab with a Patroni stand-in and a pgvip per cluster."""

    def __init__(self, lab: DaemonLab, host: str) -> None:
        self.lab, self.host, self.ns = lab, host, lab.net.ns(host)
        self.dir = lab.tmp / host
        self.dir.mkdir(exist_ok=True)
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}

    def path(self, c: Cluster, what: str) -> Path:
        return self.dir / f"{c.name}-{what}"

    def start_standin(self, c: Cluster) -> None:
        leader = self.host == "a"
        members = [{"name": "a", "role": "leader", "state": "running", "host": "192.0.2.1",
                    "port": 5432}]  # fmt: skip
        state = {"primary": 200 if leader else 503, "name": self.host,
                 "cluster": {"members": members}}  # fmt: skip
        self.path(c, "state.json").write_text(json.dumps(state))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m",
             "tests.integration.standin_patroni", "--listen", f"127.0.0.1:{c.patroni_port}",
             "--state", str(self.path(c, "state.json"))],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.lab.extra_procs.append(proc)

    def write_config(self, c: Cluster, name: str | None = None, **changes: object) -> Path:
        sections: dict[str, object] = {
            "patroni": {"url": f"http://127.0.0.1:{c.patroni_port}", "poll_interval": 0.1},
            "rw": {"vip": f"{c.rw}/24", "vrid": c.rw_vrid},
            "instance": {"name": name or c.name},
            "ro": {"vip": f"{c.ro}/24", "vrid": c.ro_vrid, "dataplane": "nftables", "rise": 1,
                   "poll_interval": 0.1, "fallback": "primary"},
            "status": {"port": c.status_port},
        }  # fmt: skip
        body = render_config(self.lab.node(self.host), 200, **(sections | changes))
        path = self.path(c, f"{name or c.name}.toml")
        path.write_text(body)
        return path

    def pgvip(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, PGVIP, *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    def start(self, c: Cluster) -> None:
        config = self.write_config(c)
        with open(self.path(c, "log"), "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, PGVIP, "run", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, cwd="/",
            )  # fmt: skip
        self.daemons[c.name] = proc
        self.lab.extra_procs.append(proc)

    def stop(self, c: Cluster, sig: int) -> int:
        proc = self.daemons.pop(c.name)
        proc.send_signal(sig)
        return proc.wait(10)

    def release(self, c: Cluster) -> str:
        done = self.pgvip("release", "--config", str(self.path(c, f"{c.name}.toml")))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def has(self, address: str) -> bool:
        return has_address(self.ns, address)

    def tables(self) -> set[str]:
        out = self.lab.net.exec(self.host, "nft", "list", "tables")
        return {line.removeprefix("table ").strip() for line in out.splitlines() if line}

    def ip_forward(self) -> str:
        return self.lab.net.exec(self.host, "cat", "/proc/sys/net/ipv4/ip_forward").strip()

    def status(self, c: Cluster) -> dict[str, object]:
        out = self.lab.net.exec(
            self.host, "curl", "-s", "-m", "2", f"http://127.0.0.1:{c.status_port}/status"
        )
        return json.loads(out)


def served(lab: DaemonLab, vip: str) -> str:
    return lab.net.exec("c", sys.executable, "-c", CLIENT, vip).strip()


def rw_state(snapshot: dict[str, object]) -> object:
    instances = snapshot["instances"]
    assert isinstance(instances, dict)
    return instances["rw"]["state"]


def test_two_instances_per_host_keep_out_of_each_others_state(dlab: DaemonLab) -> None:
    a, b = Host(dlab, "a"), Host(dlab, "b")
    dlab.extra_procs.append(
        subprocess.Popen(["ip", "netns", "exec", a.ns, sys.executable, "-c", BACKEND])
    )
    for host in (a, b):
        host.lab.net.sysctl(host.host, "net.ipv4.ip_forward", "0")
        for c in (X, Y):
            host.start_standin(c)
    for host in (a, b):
        for c in (X, Y):
            host.start(c)

    wait_for(lambda: a.has(X.rw) and a.has(Y.rw), 20, "both RW VIPs on a")
    wait_for(lambda: b.has(X.ro) and b.has(Y.ro), 20, "both RO VIPs on b")
    wait_for(lambda: {"ip pgvip-x", "ip pgvip-y"} <= b.tables(), 20, "both director tables on b")
    guards = {"inet pgvip_guard-x", "inet pgvip_guard-y"}
    wait_for(lambda: guards <= a.tables() and guards <= b.tables(), 10, "four guard tables")
    assert not (b.has(X.rw) or b.has(Y.rw) or a.has(X.ro) or a.has(Y.ro))
    assert b.ip_forward() == "1"
    wait_for(lambda: served(dlab, Y.ro) == "a", 10, "the RO VIP of y serving")
    assert served(dlab, X.ro) == "a"

    # SIGTERM x on b: its director clears its own table; y still claims ip_forward.
    assert b.stop(X, signal.SIGTERM) == 0
    wait_for(lambda: a.has(X.ro), 10, "x's RO VIP moving to a")
    assert "ip pgvip-x" not in b.tables()
    assert b.has(Y.ro) and "ip pgvip-y" in b.tables()
    assert b.ip_forward() == "1", "x's clear turned off the forwarding y still needs"
    out = b.release(X)
    assert "pgvip_guard-x" in out and "-y" not in out, out
    assert "inet pgvip_guard-x" not in b.tables()
    assert {"ip pgvip-y", "inet pgvip_guard-y"} <= b.tables()
    assert b.has(Y.ro) and b.ip_forward() == "1"
    assert served(dlab, Y.ro) == "a"

    # kill -9 of y on a, then ExecStopPost's release: only y's VIP and table go.
    assert a.stop(Y, signal.SIGKILL) == -signal.SIGKILL
    assert a.has(Y.rw)  # a killed daemon cleans nothing
    out = a.release(Y)
    assert f"released {Y.rw}/24 on eth0" in out and X.rw not in out and X.ro not in out, out
    assert not a.has(Y.rw)
    assert a.has(X.rw) and a.has(X.ro)
    wait_for(lambda: "ip pgvip-x" in a.tables(), 10, "x directing on a")
    assert {"inet pgvip_guard-x"} <= a.tables() and "inet pgvip_guard-y" not in a.tables()
    assert a.ip_forward() == "1"
    wait_for(lambda: served(dlab, X.ro) == "a", 10, "x's RO VIP serving through a")
    assert rw_state(a.status(X)) == "MASTER"

    # What another instance holds is refused at start-up, exit 2 in one line, by check-config
    # first. a: x runs (8010, VRIDs 50/51), y is dead.
    # (check-config cannot tell a second x from x itself, which it may be checking.)
    done = a.pgvip("run", "--config", str(a.write_config(Y, name="x")))
    assert done.returncode == 2 and "another pgvip instance named 'x'" in done.stderr, done
    clash_vrid = a.write_config(Y, name="z", rw={"vip": f"{Y.rw}/24", "vrid": X.rw_vrid})
    clash_port = a.write_config(Y, name="w", status={"port": X.status_port})
    for path, said in ((clash_vrid, "rw.vrid 50 on eth0"), (clash_port, "8010")):
        for cmd in ("check-config", "run"):
            done = a.pgvip(cmd, "--config", str(path))
            assert done.returncode == 2, (cmd, done)
            assert said in done.stderr and "Traceback" not in done.stderr, (cmd, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1, (cmd, done.stderr)
    assert a.has(X.rw) and rw_state(a.status(X)) == "MASTER"

    # A reload cannot rename a running instance (its tables and claims carry the name).
    path = a.path(X, "x.toml")
    path.write_text(path.read_text().replace('name = "x"', 'name = "x2"'))
    a.daemons["x"].send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in a.path(X, "log").read_text(), 5, "the reload refused")
    assert a.daemons["x"].poll() is None and a.has(X.rw) and a.has(X.ro)
    assert "ip pgvip-x" in a.tables() and not any("x2" in t for t in a.tables())

    # The last director on b to stop puts ip_forward back.
    assert b.stop(Y, signal.SIGTERM) == 0
    assert b.ip_forward() == "0"
    assert "ip pgvip-y" not in b.tables()
