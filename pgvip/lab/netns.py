"""Network namespace plumbing for the lab: namespaces, veths on a bridge, the root guard route,
and running commands or HTTP requests inside a namespace.

Everything goes through iproute2 (`ip`, batched where it matters) so a failing step prints the
same error an operator would see by hand; HTTP uses a thread that has entered the namespace.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IP = "ip"


class NetnsError(RuntimeError):
    """A namespace, link, address or route operation failed (the message quotes the command)."""


# -- running commands ------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 30.0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing text output; NetnsError on failure if `check`."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NetnsError(f"{argv[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`{_show(argv)}` did not finish within {timeout} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise NetnsError(f"`{_show(argv)}` failed: {detail}")
    return proc


def exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """`ip netns exec NS ARGV...`: iproute2 execs ARGV in place, so a PID is the command's own."""
    return [IP, "netns", "exec", ns, *argv]


def batch(lines: Sequence[str], *, ns: str | None = None) -> None:
    """Run many `ip` commands in one process (`ip [-n NS] -batch -`); stops at the first error."""
    if not lines:
        return
    argv = [IP] + (["-n", ns] if ns else []) + ["-batch", "-"]
    run(argv, input="\n".join(lines) + "\n")


def _show(argv: Sequence[str]) -> str:
    return " ".join(str(a) for a in argv)


# -- namespaces ------------------------------------------------------------


def list_namespaces() -> list[str]:
    """Names of the namespaces `ip netns` knows (the files in /run/netns)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def delete_namespace(ns: str) -> None:
    """Remove a namespace's name and bind mount; a no-op when it does not exist."""
    if not exists(ns):
        return
    run([IP, "netns", "delete", ns])


def namespace_pids(ns: str) -> list[int]:
    """PIDs of every live process inside the namespace (`ip netns pids`)."""
    if not exists(ns):
        return []
    proc = run([IP, "netns", "pids", ns], check=False)
    if proc.returncode != 0:
        if not exists(ns):
            return []
        raise NetnsError(f"`ip netns pids {ns}` failed: {proc.stderr.strip()}")
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def netns_mounts() -> list[str]:
    """Mount points under /run/netns (the bind mounts that keep namespaces alive)."""
    prefix = str(NETNS_DIR) + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 4 and fields[4].startswith(prefix):
                found.append(fields[4])
    return found


# -- the switch ------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """One host on the switch: namespace, its switch-side veth name, its address."""

    ns: str
    switch_port: str
    address: ipaddress.IPv4Interface


def build_switch(switch_ns: str, bridge: str, ports: Sequence[Port]) -> None:
    """Create the switch namespace with a bridge and one namespace per port wired to it.

    Each veth pair is created with its ends already inside their namespaces, so nothing of the
    lab ever appears in the root namespace, not even for an instant.
    """
    root_lines = [f"netns add {switch_ns}"]
    root_lines += [f"netns add {p.ns}" for p in ports]
    root_lines += [
        f"link add eth0 netns {p.ns} type veth peer name {p.switch_port} netns {switch_ns}"
        for p in ports
    ]
    batch(root_lines)
    # STP off: ports forward at once. Snooping off: VRRP and GARP are flooded regardless,
    # but other multicast would otherwise depend on IGMP state nobody maintains here.
    sw_lines = [
        "link set lo up",
        f"link add {bridge} type bridge stp_state 0 mcast_snooping 0",
        f"link set {bridge} up",
    ]
    sw_lines += [f"link set {p.switch_port} master {bridge} up" for p in ports]
    batch(sw_lines, ns=switch_ns)
    for p in ports:
        batch(["link set lo up", f"addr add {p.address} dev eth0", "link set eth0 up"], ns=p.ns)


def set_port(switch_ns: str, port: str, up: bool) -> None:
    """Bring a switch-side port down (the host is cut off, its eth0 loses carrier) or up."""
    run([IP, "-n", switch_ns, "link", "set", port, "up" if up else "down"])


def port_is_up(switch_ns: str, port: str) -> bool | None:
    """Whether a switch port is administratively up; None if there is no such port."""
    proc = run([IP, "-n", switch_ns, "-j", "link", "show", port], check=False)
    links = json.loads(proc.stdout or "[]") if proc.returncode == 0 else []
    if not links:
        return None
    return "UP" in links[0].get("flags", [])


def ipv4_addresses(ns: str, ifname: str) -> list[ipaddress.IPv4Interface]:
    """IPv4 addresses configured on one interface of a namespace ([] if it is missing)."""
    proc = run([IP, "-n", ns, "-j", "-4", "addr", "show", "dev", ifname], check=False)
    if proc.returncode != 0:
        return []
    found = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []):
            found.append(ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}"))
    return found


# -- the root namespace ----------------------------------------------------


def root_routes() -> list[dict[str, object]]:
    """Every IPv4 route of the root namespace, in all tables (`ip -j -4 route show table all`)."""
    proc = run([IP, "-j", "-4", "route", "show", "table", "all"])
    return list(json.loads(proc.stdout or "[]"))


def root_addresses() -> list[tuple[str, ipaddress.IPv4Interface]]:
    """(interface, address) for every IPv4 address of the root namespace."""
    proc = run([IP, "-j", "-4", "addr", "show"])
    found = []
    for link in json.loads(proc.stdout or "[]"):
        for info in link.get("addr_info", []):
            iface = ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}")
            found.append((str(link.get("ifname", "?")), iface))
    return found


def has_unreachable_route(subnet: ipaddress.IPv4Network) -> bool:
    proc = run([IP, "-j", "-4", "route", "show", "type", "unreachable", "exact", str(subnet)])
    return bool(json.loads(proc.stdout or "[]"))


def add_unreachable_route(subnet: ipaddress.IPv4Network) -> None:
    """Make the root namespace refuse the lab subnet, so a mistake fails fast, never leaks."""
    if not has_unreachable_route(subnet):
        run([IP, "route", "add", "unreachable", str(subnet)])


def delete_unreachable_route(subnet: ipaddress.IPv4Network) -> None:
    if has_unreachable_route(subnet):
        run([IP, "route", "del", "unreachable", str(subnet)])


def route_network(route: Mapping[str, object]) -> ipaddress.IPv4Network | None:
    """The IPv4 destination of a route from `ip -j route`; None for default or non-IPv4."""
    dst = str(route.get("dst", ""))
    if dst in ("", "default"):
        return None
    try:
        return ipaddress.IPv4Network(dst, strict=False)
    except ValueError:
        return None


def routes_to(subnet: ipaddress.IPv4Network) -> list[str]:
    """Root-namespace routes (main table) whose destination is exactly the subnet or inside it."""
    found = []
    for route in root_routes():
        net = route_network(route)
        if net is not None and net.subnet_of(subnet):
            found.append(f"{route.get('type', 'unicast')} {route.get('dst')}")
    return found


# -- HTTP from inside a namespace -----------------------------------------


def enter_netns(ns: str) -> None:
    """Move the calling thread (only) into network namespace `ns`."""
    # setns(CLONE_NEWNET) moves only the calling thread; Python 3.11 has no os.setns.
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def _http(method: str, url: str, body: bytes | None, timeout: float) -> HttpAnswer:
    import http.client
    import urllib.parse

    # http.client, not urllib: urllib honours *_proxy variables and could send lab traffic
    # to a proxy outside the namespace.
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, parts.path or "/", body=body, headers=headers)
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.read())
    finally:
        conn.close()


class NamespaceHttp:
    """Plain HTTP requests sent from inside a namespace by worker threads that entered it.

    A thread that setns()'d stays there, so the workers are never shared with other work; if
    entering fails the pool is broken and no request is ever sent from the root namespace.
    """

    def __init__(self, ns: str, *, workers: int = 1) -> None:
        self.ns = ns
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix=f"netns-{ns}",
            initializer=enter_netns,
            initargs=(ns,),
        )

    def submit(
        self, method: str, url: str, *, body: bytes | None = None, timeout: float = 2.0
    ) -> Future[HttpAnswer]:
        """Start one request; the future raises OSError (refused, timed out, ...) as is, or
        BrokenThreadPool if the namespace could not be entered."""
        try:
            return self._pool.submit(_http, method, url, body, timeout)
        except (BrokenThreadPool, RuntimeError) as exc:
            raise NetnsError(f"cannot send HTTP from namespace {self.ns}: {exc}") from exc

    def request(
        self, method: str, url: str, *, body: bytes | None = None, timeout: float = 2.0
    ) -> HttpAnswer:
        """Send one request and wait for the answer; OSError (refused, timeout, ...) as is."""
        future = self.submit(method, url, body=body, timeout=timeout)
        try:
            return future.result()
        except BrokenThreadPool as exc:
            raise NetnsError(f"cannot enter namespace {self.ns} to send HTTP: {exc}") from exc

    def close(self) -> None:
        """Stop the workers; waits for a request in flight (each has its own timeout)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
