"""Real `pgvip run` processes in namespaces a, b (and c for peers such as keepalived),
each beside a Patroni stand-in whose answers the test sets. The real-Patroni lab
(tests/integration/test_rw_lab.py) covers what depends on Patroni itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from tests.integration.netlab import NetLab, sh, switched_lab, wait_for

VENV_BIN = Path(sys.executable).parent
PGVIP = str(VENV_BIN / "pgvip")
REPO = Path(__file__).resolve().parents[3]
VIP = "192.0.2.50"
VRID = 50


@dataclass
class Node:
    host: str
    ns: str
    workdir: Path
    standin: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def state_file(self) -> Path:
        return self.workdir / "patroni-state.json"

    @property
    def config_path(self) -> Path:
        return self.workdir / "pgvip.toml"

    def set_primary(self, code: int, **extra: Any) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"primary": code, "name": self.host, **extra}))
        tmp.replace(self.state_file)  # atomic: the stand-in never reads half a file

    def log_lines(self) -> list[dict[str, Any]]:
        if self.log_path is None or not self.log_path.exists():
            return []
        lines = []
        for raw in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": raw})
        return lines

    def transitions(self) -> list[tuple[str, str]]:
        return [(e["from"], e["to"]) for e in self.log_lines() if e.get("event") == "transition"]

    def wait_log(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 3.0
    ) -> None:
        """Wait for a log line: the daemon changes the address first and logs it after,
        so a line may trail what `wait_holder` saw by a moment."""
        wait_for(lambda: any(predicate(e) for e in self.log_lines()), timeout=timeout, what=what)


def render_config(node: Node, priority: int, **overrides: Any) -> str:
    vrrp = {"interface": "eth0", "advert_int": 20, **overrides.pop("vrrp", {})}
    patroni = {
        "url": "http://127.0.0.1:8008",
        "poll_interval": 0.1,
        "timeout": 0.5,
        **overrides.pop("patroni", {}),
    }
    rw = {"vip": f"{VIP}/24", "vrid": VRID, "priority": priority, **overrides.pop("rw", {})}
    sections = {
        "patroni": patroni,
        "vrrp": vrrp,
        "rw": rw,
        "announce": {"garp_count": 2, "garp_interval": 1.1},
        "log": {"format": "json", "level": "debug"},
        **overrides,
    }

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v)

    out = []
    for name, body in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


@dataclass
class DaemonLab:
    net: NetLab
    tmp: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    extra_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node(self, host: str) -> Node:
        if host not in self.nodes:
            workdir = self.tmp / host
            workdir.mkdir(exist_ok=True)
            self.nodes[host] = Node(host, self.net.ns(host), workdir)
        return self.nodes[host]

    def start_standin(self, host: str, primary: int = 503) -> Node:
        node = self.node(host)
        node.set_primary(primary)
        node.standin = subprocess.Popen(
            ["ip", "netns", "exec", node.ns, sys.executable, "-m",
             "tests.integration.standin_patroni", "--listen", "127.0.0.1:8008",
             "--state", str(node.state_file)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self.http_ok(host), timeout=10, what=f"stand-in Patroni on {host}")
        return node

    def http_ok(self, host: str) -> bool:
        result = subprocess.run(
            ["ip", "netns", "exec", self.net.ns(host), "curl", "-s", "-o", "/dev/null",
             "-m", "1", "http://127.0.0.1:8008/patroni"],
            capture_output=True,
        )  # fmt: skip
        return result.returncode == 0

    def start_pgvip(
        self,
        host: str,
        priority: int = 200,
        *,
        user: str | None = None,
        env: dict[str, str] | None = None,
        **overrides: Any,
    ) -> Node:
        node = self.node(host)
        node.config_path.write_text(render_config(node, priority, **overrides))
        node.log_path = node.workdir / "pgvip.log"
        prefix = ["ip", "netns", "exec", node.ns]
        if user:
            os.chmod(node.workdir, 0o755)
            prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups",
                       "--inh-caps=-all,+net_admin,+net_raw",
                       "--ambient-caps=-all,+net_admin,+net_raw",
                       "--bounding-set=-all,+net_admin,+net_raw", "--"]  # fmt: skip
        with open(node.log_path, "ab") as log:
            node.daemon = subprocess.Popen(
                [*prefix, PGVIP, "run", "--config", str(node.config_path)],
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
            )
        return node

    def stop_pgvip(self, host: str, sig: int = signal.SIGTERM, timeout: float = 5) -> int:
        node = self.nodes[host]
        assert node.daemon is not None
        node.daemon.send_signal(sig)
        code = node.daemon.wait(timeout)
        node.daemon = None
        return code

    def holders(self, vip: str = VIP) -> list[str]:
        return [h for h in ("a", "b", "c") if has_address(self.net.ns(h), vip)]

    def close(self) -> None:
        for node in self.nodes.values():
            for proc in (node.daemon, node.standin):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
        for proc in self.extra_procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


# pyroute2's sync handles are not thread-safe: one set per thread (the sampler has its own).
_local = threading.local()
_all_handles: list[IPRoute] = []
_all_lock = threading.Lock()


def has_address(ns: str, address: str) -> bool:
    handles: dict[str, IPRoute] = getattr(_local, "handles", None) or {}
    _local.handles = handles
    ipr = handles.get(ns)
    if ipr is None:
        ipr = handles[ns] = IPRoute(netns=ns, flags=0)
        with _all_lock:
            _all_handles.append(ipr)
    return any(msg.get("address") == address for msg in ipr.addr("dump"))


def close_handles() -> None:
    with _all_lock:
        for ipr in _all_handles:
            ipr.close()
        _all_handles.clear()
    _local.handles = {}


class HolderSampler:
    """Counts VIP holders across namespaces every `interval` seconds in a thread."""

    def __init__(self, lab: DaemonLab, interval: float = 0.02, vip: str = VIP) -> None:
        self.lab, self.interval, self.vip = lab, interval, vip
        self.samples = 0
        self.max_holders = 0
        self.double: list[tuple[float, list[str]]] = []
        self.max_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            holders = self.lab.holders(self.vip)
            self.samples += 1
            self.max_holders = max(self.max_holders, len(holders))
            if len(holders) > 1:
                self.double.append((started, holders))
            self.max_gap = max(self.max_gap, time.monotonic() - started)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self) -> HolderSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_holder(lab: DaemonLab, expected: list[str], timeout: float = 10) -> float:
    """Wait until exactly `expected` hold the VIP; returns the seconds it took."""
    started = time.monotonic()
    wait_for(
        lambda: lab.holders() == expected,
        timeout=timeout,
        what=f"VIP holders == {expected} (now {lab.holders()})",
    )
    return time.monotonic() - started


@pytest.fixture
def dlab() -> Iterator[DaemonLab]:
    # Not pytest's tmp_path: its parent is 0700, and one test runs pgvip as `pgvip`.
    tmp_path = Path(tempfile.mkdtemp(prefix="pgvip-dm-"))
    os.chmod(tmp_path, 0o755)
    with switched_lab("t-dm") as net:
        lab = DaemonLab(net, tmp_path)
        try:
            yield lab
        finally:
            lab.close()
            close_handles()
            for node in lab.nodes.values():
                if node.log_path and node.log_path.exists():
                    print(f"--- pgvip log {node.host} (last 30 lines)")
                    print("\n".join(node.log_path.read_text().splitlines()[-30:]))
            shutil.rmtree(tmp_path, ignore_errors=True)


__all__ = [
    "VIP",
    "DaemonLab",
    "HolderSampler",
    "IPv4Address",
    "Node",
    "sh",
    "wait_for",
    "wait_holder",
    "Callable",
]
