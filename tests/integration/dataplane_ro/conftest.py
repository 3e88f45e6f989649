"""A small RO-balancer lab (fixture `ro_lab`): a switch, a director, a client and two backends.

Namespaces are named t-ro-<random>-<host> and are always deleted, and the backend servers
killed by PID, even when a test fails. The backends run a tiny TCP server on 5432 that
answers with its own name (not PostgreSQL: only where a connection lands matters here).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest

from pgvip.dataplane.balancer import RealServer, VirtualService
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer

SUBNET4 = "198.51.100"  # TEST-NET-2: exists only inside the test namespaces
SUBNET6 = "2001:db8:49"
HOSTS = {"dir": 10, "cli": 20, "b1": 31, "b2": 32}
VIP4 = IPv4Address(f"{SUBNET4}.100")
VIP6 = IPv6Address(f"{SUBNET6}::100")
PORT = 5432

SERVER = """
import socket, sys
name = sys.argv[1].encode()
servers = []
for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, int(sys.argv[2])))
    s.listen(256)
    servers.append(s)
print("ready", flush=True)
import selectors
sel = selectors.DefaultSelector()
for s in servers:
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept()
        conn.sendall(name)
        conn.close()
"""

CLIENT = """
import json, socket, sys, time
vip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in vip else socket.AF_INET
seen = {}
for _ in range(count):
    start = time.monotonic()
    try:
        with socket.create_connection((vip, port), timeout=3) as c:
            c.settimeout(3)
            answer = c.recv(64).decode() or "empty"
    except OSError as exc:
        answer = f"error:{type(exc).__name__}:{time.monotonic() - start:.2f}"
    seen[answer] = seen.get(answer, 0) + 1
print(json.dumps(seen))
"""


def sh(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=check, capture_output=True, text=True, timeout=60, input=stdin
    )


@dataclass
class RoLab:
    tag: str
    namespaces: list[str] = field(default_factory=list)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"t-ro-{self.tag}-{host}"

    def ip(self, host: str, *args: str) -> str:
        return sh("ip", "-n", self.ns(host), *args).stdout

    def exec(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(host), *args, check=check)

    def v4(self, host: str) -> IPv4Address:
        return IPv4Address(f"{SUBNET4}.{HOSTS[host]}")

    def v6(self, host: str) -> IPv6Address:
        return IPv6Address(f"{SUBNET6}::{HOSTS[host]}")

    def connect(self, host: str, vip: Any, count: int) -> dict[str, int]:
        """`count` new connections from `host` to vip:5432; {answer or error: how many}."""
        out = self.exec(host, sys.executable, "-c", CLIENT, str(vip), str(PORT), str(count))
        result: dict[str, int] = json.loads(out.stdout)
        return result

    def sysctl(self, host: str, key: str) -> str:
        return self.exec(host, "cat", f"/proc/sys/{key}").stdout.strip()

    def nft_tables(self, host: str) -> list[dict[str, Any]]:
        listing = json.loads(self.exec(host, "nft", "-j", "list", "tables").stdout)
        return [i["table"] for i in listing["nftables"] if "table" in i]

    def build(self) -> None:
        for host in ("sw", *HOSTS):
            sh("ip", "netns", "add", self.ns(host))
            self.namespaces.append(self.ns(host))
            self.ip(host, "link", "set", "lo", "up")
        self.ip("sw", "link", "add", "br0", "type", "bridge")
        self.ip("sw", "link", "set", "br0", "up")
        for host in HOSTS:
            peer = f"v-{host}"
            sh(
                "ip", "link", "add", "eth0", "netns", self.ns(host),
                "type", "veth", "peer", "name", peer, "netns", self.ns("sw"),
            )  # fmt: skip
            self.ip("sw", "link", "set", peer, "master", "br0", "up")
            self.ip(host, "addr", "add", f"{self.v4(host)}/24", "dev", "eth0")
            self.ip(host, "addr", "add", f"{self.v6(host)}/64", "dev", "eth0", "nodad")
            self.ip(host, "link", "set", "eth0", "up")
        # The VIPs live on the director; the balancer itself never adds addresses.
        self.ip("dir", "addr", "add", f"{VIP4}/32", "dev", "eth0")
        self.ip("dir", "addr", "add", f"{VIP6}/128", "dev", "eth0", "nodad")
        for host in ("b1", "b2"):
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns(host),
                    sys.executable,
                    "-c",
                    SERVER,
                    host,
                    str(PORT),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.servers.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(
                    f"backend {host} did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
        self._wait_links()

    def _wait_links(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = self.exec("cli", "ping", "-c1", "-W1", str(self.v4("dir")), check=False)
            if probe.returncode == 0:
                return
        raise RuntimeError("lab links did not come up")

    def destroy(self) -> None:
        for proc in self.servers:
            proc.kill()  # by PID: the Popen object is our own child
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for name in reversed(self.namespaces):
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def ro_lab() -> Iterator[RoLab]:
    lab = RoLab(tag=secrets.token_hex(2))
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def service(
    lab: RoLab, *weights: tuple[str, int], scheduler: str = "rr", v6: bool = False
) -> VirtualService:
    vip = VIP6 if v6 else VIP4
    addr = lab.v6 if v6 else lab.v4
    backends = tuple(RealServer(addr(host), PORT, w) for host, w in weights)
    return VirtualService(vip, PORT, backends, scheduler=scheduler)


@pytest.fixture
async def lb(ro_lab: RoLab) -> AsyncIterator[NftablesLoadBalancer]:
    balancer = NftablesLoadBalancer(interface="eth0", netns=ro_lab.ns("dir"))
    try:
        yield balancer
    finally:
        await balancer.clear()
