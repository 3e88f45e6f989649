"""A small switched lab of namespaces for integration tests: hosts a, b, c on a bridge.

Namespaces are named t-dp-<random>-<host> and always deleted, even when a test fails. Code
under test runs inside a host namespace in a thread that has called setns() on itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import inspect
import json
import os
import secrets
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

HOSTS = ("a", "b", "c")
SUBNET4 = "192.0.2"  # TEST-NET-1: exists only inside the test namespaces
SUBNET6 = "2001:db8:d9"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class NetLab:
    tag: str
    prefix: str = "t-dp"
    namespaces: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{self.tag}-{host}"

    def ip(self, host: str, *args: str, check: bool = True) -> str:
        return sh("ip", "-n", self.ns(host), *args, check=check).stdout

    def exec(self, host: str, *args: str) -> str:
        return sh("ip", "netns", "exec", self.ns(host), *args).stdout

    def sysctl(self, host: str, key: str, value: str) -> None:
        self.exec(host, "sysctl", "-qw", f"{key}={value}")

    def v4(self, host: str) -> IPv4Address:
        return IPv4Address(f"{SUBNET4}.{HOSTS.index(host) + 1}")

    def v6(self, host: str) -> IPv6Address:
        return IPv6Address(f"{SUBNET6}::{HOSTS.index(host) + 1}")

    def mac(self, host: str) -> str:
        return json.loads(self.ip(host, "-j", "link", "show", "dev", "eth0"))[0]["address"]

    def addr_info(self, host: str, dev: str = "eth0") -> list[dict[str, Any]]:
        return json.loads(self.ip(host, "-j", "addr", "show", "dev", dev))[0]["addr_info"]

    def link_local(self, host: str) -> IPv6Address:
        for info in self.addr_info(host):
            if info["family"] == "inet6" and info.get("scope") == "link":
                return IPv6Address(info["local"])
        raise AssertionError(f"no link-local address on {host}")

    def ready(self, host: str) -> bool:
        infos = self.addr_info(host)
        return any(
            i["family"] == "inet6" and i.get("scope") == "link" and not i.get("tentative")
            for i in infos
        )


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def build(netlab: NetLab) -> None:
    sw = netlab.ns("sw")
    sh("ip", "netns", "add", sw)
    netlab.namespaces.append(sw)
    netlab.ip("sw", "link", "set", "lo", "up")
    netlab.ip("sw", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
    netlab.ip("sw", "link", "set", "br0", "up")
    for host in HOSTS:
        ns = netlab.ns(host)
        sh("ip", "netns", "add", ns)
        netlab.namespaces.append(ns)
        netlab.ip(host, "link", "set", "lo", "up")
        # Link-locals must be usable at once for the IPv6 VRRP tests (no DAD wait).
        netlab.sysctl(host, "net.ipv6.conf.default.accept_dad", "0")
        netlab.sysctl(host, "net.ipv6.conf.all.accept_dad", "0")
        port = f"{host}-{netlab.tag}"
        # Created directly inside the namespaces: the root namespace never sees them.
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
           "netns", sw)  # fmt: skip
        netlab.ip("sw", "link", "set", port, "master", "br0", "up")
        netlab.ip(host, "link", "set", "eth0", "up")
        netlab.ip(host, "addr", "add", f"{netlab.v4(host)}/24", "dev", "eth0")
        netlab.ip(host, "addr", "add", f"{netlab.v6(host)}/64", "dev", "eth0", "nodad")
    for host in HOSTS:
        wait_for(functools.partial(netlab.ready, host), what=f"link-local address on {host}")


# -- running code inside a namespace ---------------------------------------------------------


def _setns(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def start_in_netns(ns: str, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
    """Run fn(*args) in a new thread inside `ns` (coroutine functions under asyncio.run)."""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def body() -> None:
        try:
            _setns(ns)  # setns() is per thread: the rest of the test process stays put
            result = asyncio.run(fn(*args)) if inspect.iscoroutinefunction(fn) else fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    threading.Thread(target=body, name=f"netns-{ns}", daemon=True).start()
    return future


def run_in_netns(ns: str, fn: Callable[..., Any], *args: Any, timeout: float = 20) -> Any:
    return start_in_netns(ns, fn, *args).result(timeout)


# -- per-thread capabilities -----------------------------------------------------------------


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_effective_capabilities(*bits: int) -> None:
    """Clear bits from the calling thread's effective capabilities (they are per thread)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for bit in bits:
        data[bit // 32].effective &= ~(1 << (bit % 32)) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


# -- capturing frames ------------------------------------------------------------------------

ETH_P_ALL = 0x0003


class FrameCapture:
    """An AF_PACKET listener on eth0 of the thread's namespace; open it before sending."""

    def __init__(self, ethertype: int) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        self.sock.bind(("eth0", ethertype))
        self.sock.settimeout(0.2)

    def wait(self, match: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame, address = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if address[2] != socket.PACKET_OUTGOING and match(frame):
                return frame
        raise AssertionError(f"no matching frame within {timeout} s")

    def close(self) -> None:
        self.sock.close()


def write_pcap(path: Path, frames: list[bytes]) -> None:
    """A classic pcap file (Ethernet link type) that tshark can dissect."""
    out = [struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for frame in frames:
        out.append(struct.pack("=IIII", 0, 0, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-T", "fields"]
    for name in fields:
        args += ["-e", name]
    result = sh(*args)
    return [line.split("\t") for line in result.stdout.splitlines() if line]


@contextmanager
def switched_lab(prefix: str = "t-dp") -> Iterator[NetLab]:
    """Hosts a, b, c on a bridge in namespaces <prefix>-<random>-*, always deleted."""
    netlab = NetLab(tag=secrets.token_hex(2), prefix=prefix)
    try:
        build(netlab)
        yield netlab
    finally:
        for ns in reversed(netlab.namespaces):
            sh("ip", "netns", "del", ns, check=False)
