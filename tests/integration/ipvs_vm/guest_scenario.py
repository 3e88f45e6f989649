"""The guest half of the IPVS VM test: run inside the qemu guest, where the kernel has IPVS, it
drives pgvip's IPVS dataplane through a director namespace and prints one JSON line of what it saw.

It asserts nothing: each step records readbacks (`actual()`, `ipvsadm -Ln`), plans and which
backend answered each connection, and the host test asserts every item, so a failure names
the item. The guest is thrown away after one run, so nothing here is cleaned up.

Topology (all namespaces in the guest): for NAT, client `cli` -- director `dir` (holds the
VIPs, the backends' gateway) -- backends `b1`, `b2`, each on its own link to the director; for
DR, the same four namespaces also share one flat LAN through a bridge in `sw`. The backends'
TCP servers and the client live in this process: a socket belongs to the namespace it was
created in, so setns() around socket() is all it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

RESULT_PREFIX = "PGVIP-IPVS-RESULT "
PORT = 5432
NS = {
    "dir": "t-ipvs-dir",
    "cli": "t-ipvs-cli",
    "b1": "t-ipvs-b1",
    "b2": "t-ipvs-b2",
    "sw": "t-ipvs-sw",
}
VIP4 = "10.77.0.100"
VIP_DR = "10.78.0.100"
LAN_HOSTS = {"dir": "10.78.0.10", "cli": "10.78.0.20", "b1": "10.78.0.31", "b2": "10.78.0.32"}
VIP6 = "fd77::100"
# (director side, far side) address per link; the director's interface is named after the peer.
LINKS = {
    "cli": (("10.77.0.1/24", "fd77::1/64"), ("10.77.0.2/24", "fd77::2/64")),
    "b1": (("10.77.1.1/24", "fd77:1::1/64"), ("10.77.1.2/24", "fd77:1::2/64")),
    "b2": (("10.77.2.1/24", "fd77:2::1/64"), ("10.77.2.2/24", "fd77:2::2/64")),
}
BACKENDS4 = {"b1": "10.77.1.2", "b2": "10.77.2.2"}
BACKENDS6 = {"b1": "fd77:1::2", "b2": "fd77:2::2"}
MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "veth", "bridge")
# For IPVS one-armed NAT's masquerade (nft): loaded up front, since the guest's usermode
# modprobe helper cannot see the chroot's /lib/modules.
NFT_MODULES = ("nf_tables", "nft_ct", "nft_chain_nat", "nft_masq", "nf_conntrack", "nf_nat")
FLAT_CONNECTIONS = 1000
CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 5.0


def describe(vs: Any) -> dict[str, Any] | None:
    """A VirtualService as plain JSON (the host builds its expectation with the same function)."""
    if vs is None:
        return None
    return {
        "vip": str(vs.vip),
        "port": vs.port,
        "protocol": vs.protocol,
        "scheduler": vs.scheduler,
        "forwarding": vs.forwarding,
        "persistence_timeout": vs.persistence_timeout,
        "backends": [[str(b.address), b.port, b.weight] for b in vs.backends],
    }


def describe_op(op: Any) -> list[Any]:
    """A planned IPVS op as [kind, dest address or None, weight or None]."""
    dest = getattr(op, "dest", None)
    return [type(op).__name__, str(dest.address) if dest else None, dest.weight if dest else None]


# -- namespaces ------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block (this thread) in namespace `name`; sockets made there stay there."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        _setns(target.fileno(), name)
        try:
            yield
        finally:
            _setns(home.fileno(), "back home")


def sh(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def build_topology() -> None:
    sh("modprobe", "-a", *MODULES, *NFT_MODULES)
    sh("ip", "-b", "-", stdin="".join(f"netns add {ns}\n" for ns in NS.values()))
    for ns in NS.values():
        with in_netns(ns):
            # Links created from now on skip DAD, so IPv6 addresses are usable at once.
            for key in ("default/accept_dad", "all/accept_dad"):
                with open(f"/proc/sys/net/ipv6/conf/{key}", "w") as f:
                    f.write("0\n")
    sh(
        "ip",
        "-b",
        "-",
        stdin="".join(
            f"link add eth0 netns {NS[peer]} type veth peer name {peer} netns {NS['dir']}\n"
            for peer in LINKS
        ),
    )
    build_lan()
    director = ["link set lo up"]
    for peer, ((d4, d6), (p4, p6)) in LINKS.items():
        director += [f"addr add {d4} dev {peer}", f"addr add {d6} dev {peer}"]
        director.append(f"link set {peer} up")
        far = ["link set lo up", f"addr add {p4} dev eth0", f"addr add {p6} dev eth0"]
        far += ["link set eth0 up", f"route add default via {d4.split('/')[0]}"]
        far.append(f"route add default via {d6.split('/')[0]}")
        sh("ip", "-n", NS[peer], "-b", "-", stdin="\n".join(far) + "\n")
    # The VIPs live on the client-facing links, so the director answers ARP/ND for them.
    director += [f"addr add {VIP4}/32 dev cli", f"addr add {VIP6}/128 dev cli"]
    director.append(f"addr add {VIP_DR}/32 dev lan")
    sh("ip", "-n", NS["dir"], "-b", "-", stdin="\n".join(director) + "\n")


def build_lan() -> None:
    """One flat subnet for DR: interface `lan` in each namespace, bridged in `sw`."""
    sh(
        "ip",
        "-b",
        "-",
        stdin="".join(
            f"link add lan netns {NS[n]} type veth peer name p-{n} netns {NS['sw']}\n"
            for n in LAN_HOSTS
        ),
    )
    switch = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
    for n, address in LAN_HOSTS.items():
        switch += [f"link set p-{n} master br0", f"link set p-{n} up"]
        sh("ip", "-n", NS[n], "-b", "-", stdin=f"addr add {address}/24 dev lan\nlink set lan up\n")
    sh("ip", "-n", NS["sw"], "-b", "-", stdin="\n".join(switch) + "\n")


async def start_backends() -> list[asyncio.Server]:
    servers = []
    for name in ("b1", "b2"):

        async def answer(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = name
        ) -> None:
            writer.write(name.encode())
            await writer.drain()
            writer.close()

        for family, addr in ((4, "0.0.0.0"), (6, "::")):
            with in_netns(NS[name]):
                sock = _tcp_socket(family)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, PORT))
            servers.append(await asyncio.start_server(answer, sock=sock))
    return servers


def _tcp_socket(family: int) -> socket.socket:
    return socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, socket.SOCK_STREAM)


async def connect_many(vip: str, count: int) -> list[str]:
    """Connect from the client namespace `count` times; who answered each (or the error)."""
    loop = asyncio.get_running_loop()
    answers = []
    family = ipaddress.ip_address(vip).version
    for _ in range(count):
        with in_netns(NS["cli"]):
            sock = _tcp_socket(family)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (vip, PORT)), CONNECT_TIMEOUT)
            data = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 64), CONNECT_TIMEOUT):
                data += chunk
            answers.append(data.decode() or "empty")
        except (OSError, TimeoutError) as exc:
            answers.append(f"error:{type(exc).__name__}:{exc}")
        finally:
            sock.close()
    return answers


async def ipvsadm() -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", NS["dir"], "ipvsadm", "-Ln",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode()


def netns_sysctls(name: str, *keys: str) -> dict[str, str]:
    # /proc/sys/net shows the namespace of the thread that opens the file.
    with in_netns(NS[name]):
        out = {}
        for key in keys:
            with open(f"/proc/sys/{key}") as f:
                out[key] = f.read().strip()
        return out


def sysctls(*keys: str) -> dict[str, str]:
    return netns_sysctls("dir", *keys)


def ip_json(name: str, *args: str) -> list[dict[str, Any]]:
    return json.loads(sh("ip", "-n", NS[name], "-j", *args) or "[]")


def link_mac(name: str, ifname: str) -> str:
    return str(ip_json(name, "link", "show", "dev", ifname)[0]["address"])


def neighbour_mac(name: str, address: str) -> str | None:
    entries = ip_json(name, "neigh", "show", "to", address)
    return entries[0].get("lladdr") if entries else None


def lo_addresses(name: str) -> list[str]:
    [lo] = ip_json(name, "addr", "show", "dev", "lo")
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in lo["addr_info"])


REAL_SERVER_SYSCTLS = (
    "net/ipv4/conf/all/arp_ignore",
    "net/ipv4/conf/all/arp_announce",
    "net/ipv4/conf/lan/arp_ignore",
    "net/ipv4/conf/lan/arp_announce",
)
DIRECTOR_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/send_redirects",
    "net/ipv4/conf/cli/send_redirects",
    "net/ipv6/conf/all/forwarding",
)


# -- the scenario ------------------------------------------------------------------------
async def scenario(results: dict[str, Any], step: Callable[[str], Any]) -> None:
    from pgvip.dataplane.balancer import RealServer, virtual_service
    from pgvip.dataplane.balancer.choice import choose_dataplane, ipvs_available
    from pgvip.dataplane.balancer.ipvs_plan import plan
    from pgvip.dataplane.balancer.realserver import setup_real_server, teardown_real_server

    def servers(backends: dict[str, str], weights: dict[str, int]) -> list[RealServer]:
        return [RealServer(ipaddress.ip_address(backends[n]), PORT, w) for n, w in weights.items()]

    with step("topology"):
        build_topology()
        await start_backends()

    with step("probe"):
        available, detail = ipvs_available()
        chosen, reason = choose_dataplane("auto")
        results["probe"] = {
            "available": available,
            "detail": detail,
            "chosen": chosen.name,
            "reason": reason,
        }

    lb = chosen(interface="cli", netns=NS["dir"], service=(ipaddress.ip_address(VIP4), PORT))
    with step("apply"):
        out: dict[str, Any] = {"sysctls_before": sysctls(*DIRECTOR_SYSCTLS)}
        out["actual_before"] = describe(await lb.actual())
        want = virtual_service(VIP4, PORT, servers(BACKENDS4, {"b1": 1, "b2": 1}))
        out["desired"] = describe(want)
        out["changed"] = await lb.apply(want)
        out["changed_again"] = await lb.apply(want)
        out["actual"] = describe(await lb.actual())
        out["ipvsadm"] = await ipvsadm()
        out["sysctls"] = sysctls(*DIRECTOR_SYSCTLS)
        results["apply"] = out
    with step("rr_traffic"):
        results["rr_traffic"] = await connect_many(VIP4, 10)

    with step("persistence"):
        before = await lb.actual()
        want = virtual_service(
            VIP4, PORT, servers(BACKENDS4, {"b1": 1, "b2": 1}), persistence_timeout=600
        )
        out = {"desired": describe(want), "plan": [describe_op(op) for op in plan(before, want)]}
        out["changed"] = await lb.apply(want)
        out["actual"] = describe(await lb.actual())
        out["ipvsadm"] = await ipvsadm()
        # One client address: every connection must land where the first one did.
        out["traffic"] = await connect_many(VIP4, 6)
        results["persistence"] = out

    with step("reweight"):
        before = await lb.actual()
        want = virtual_service(VIP4, PORT, servers(BACKENDS4, {"b1": 3, "b2": 1}), scheduler="wrr")
        out = {"desired": describe(want), "plan": [describe_op(op) for op in plan(before, want)]}
        out["changed"] = await lb.apply(want)
        out["actual"] = describe(await lb.actual())
        out["ipvsadm"] = await ipvsadm()
        out["traffic"] = await connect_many(VIP4, 8)
        results["reweight"] = out

    with step("remove_backend"):
        before = await lb.actual()
        want = virtual_service(VIP4, PORT, servers(BACKENDS4, {"b1": 3}), scheduler="wrr")
        out = {"desired": describe(want), "plan": [describe_op(op) for op in plan(before, want)]}
        out["changed"] = await lb.apply(want)
        out["actual"] = describe(await lb.actual())
        out["ipvsadm"] = await ipvsadm()
        out["traffic"] = await connect_many(VIP4, 4)
        # A restarted daemon is told its service key and must find what the last run left.
        fresh = chosen(netns=NS["dir"], service=(ipaddress.ip_address(VIP4), PORT))
        out["found_by_fresh_instance"] = describe(await fresh.actual())
        results["remove_backend"] = out

    with step("ipv6"):
        lb6 = chosen(interface="cli", netns=NS["dir"], service=(ipaddress.ip_address(VIP6), PORT))
        want = virtual_service(VIP6, PORT, servers(BACKENDS6, {"b1": 1, "b2": 1}))
        out = {"desired": describe(want), "changed": await lb6.apply(want)}
        out["changed_again"] = await lb6.apply(want)
        out["actual"] = describe(await lb6.actual())
        out["ipvsadm"] = await ipvsadm()
        out["sysctls"] = sysctls(*DIRECTOR_SYSCTLS)
        out["traffic"] = await connect_many(VIP6, 4)
        await lb6.clear()
        out["actual_after_clear"] = describe(await lb6.actual())
        # Clearing the IPv6 service must leave the IPv4 one alone.
        out["ipv4_after_clear"] = describe(await lb.actual())
        results["ipv6"] = out

    with step("clear"):
        await lb.clear()
        out = {"actual": describe(await lb.actual()), "ipvsadm": await ipvsadm()}
        out["sysctls"] = sysctls(*DIRECTOR_SYSCTLS)
        await lb.clear()  # idempotent: nothing left to remove must not be an error
        out["cleared_twice"] = True
        results["clear"] = out

    with step("direct_routing"):
        vip = ipaddress.ip_address(VIP_DR)
        out = {"real_server_added": {}, "real_server_added_again": {}, "rs_sysctls": {}}
        for b in ("b1", "b2"):
            out["real_server_added"][b] = await setup_real_server(vip, netns=NS[b], interface="lan")
            out["real_server_added_again"][b] = await setup_real_server(
                vip, netns=NS[b], interface="lan"
            )
            out["rs_sysctls"][b] = netns_sysctls(b, *REAL_SERVER_SYSCTLS)
        out["lo_addresses"] = {b: lo_addresses(b) for b in ("b1", "b2")}
        lbd = chosen(interface="lan", netns=NS["dir"], service=(vip, PORT))
        lan = {b: LAN_HOSTS[b] for b in ("b1", "b2")}
        want = virtual_service(VIP_DR, PORT, servers(lan, {"b1": 1, "b2": 1}), forwarding="dr")
        out["desired"] = describe(want)
        out["changed"] = await lbd.apply(want)
        out["actual"] = describe(await lbd.actual())
        out["ipvsadm"] = await ipvsadm()
        out["traffic"] = await connect_many(VIP_DR, 4)
        # DR needs no forwarding on the director: pgvip must not have turned it on.
        out["sysctls"] = sysctls(*DIRECTOR_SYSCTLS)
        out["client_neighbour_mac"] = neighbour_mac("cli", VIP_DR)
        out["director_mac"] = link_mac("dir", "lan")
        out["real_server_macs"] = {b: link_mac(b, "lan") for b in ("b1", "b2")}
        out["real_server_removed"] = {
            b: await teardown_real_server(vip, netns=NS[b]) for b in ("b1", "b2")
        }
        out["real_server_removed_again"] = {
            b: await teardown_real_server(vip, netns=NS[b]) for b in ("b1", "b2")
        }
        out["lo_addresses_after"] = {b: lo_addresses(b) for b in ("b1", "b2")}
        await lbd.clear()
        out["ipvsadm_after_clear"] = await ipvsadm()
        results["direct_routing"] = out

    with step("flat_nat"):
        # The stock config (nat, rr) on one flat subnet: the client, the director and the
        # backends share `lan`, and the backends' default route is not the director.
        vip = ipaddress.ip_address(VIP_DR)
        keys = ("net/ipv4/vs/conntrack", "net/ipv4/ip_forward")
        lbn = chosen(interface="lan", netns=NS["dir"], service=(vip, PORT))
        lan = {b: LAN_HOSTS[b] for b in ("b1", "b2")}
        want = virtual_service(VIP_DR, PORT, servers(lan, {"b1": 1, "b2": 1}))
        out = {"sysctls_before": sysctls(*keys), "forwarding": want.forwarding}
        out["changed"] = await lbn.apply(want)
        out["actual"] = describe(await lbn.actual())
        out["sysctls"] = sysctls(*keys)
        out["masquerade"] = sorted(f"{a}:{p}" for a, p in await lbn.masquerade.current() or ())
        started = time.monotonic()
        answers = await connect_many(VIP_DR, FLAT_CONNECTIONS)
        out["connect_s"] = round(time.monotonic() - started, 2)
        out["traffic"] = {a: answers.count(a) for a in sorted(set(answers))}
        await lbn.clear()
        out["masquerade_after_clear"] = await lbn.masquerade.current()
        out["sysctls_after_clear"] = sysctls(*keys)
        out["ipvsadm_after_clear"] = await ipvsadm()
        results["flat_nat"] = out


class StepFailed(Exception):
    """A step failed; its traceback is already in the results."""


@contextlib.contextmanager
def recorded_step(results: dict[str, Any], name: str) -> Iterator[None]:
    """Time one step into results["timings"] (and its wall-clock start into
    results["started_at"], if the caller keeps one); a failure's traceback goes into
    results["error"] and is raised as StepFailed."""
    t0 = time.monotonic()
    if "started_at" in results:
        results["started_at"][name] = time.time()
    try:
        yield
    except BaseException as exc:
        results["error"] = {"step": name, "traceback": traceback.format_exc()}
        raise StepFailed from exc
    finally:
        results["timings"][f"{name}_s"] = round(time.monotonic() - t0, 2)


async def main() -> int:
    started = time.monotonic()
    results: dict[str, Any] = {"timings": {}, "error": None}
    results["timings"]["python_start_s"] = round(started - _process_start(), 2)

    def step(name: str) -> contextlib.AbstractContextManager[None]:
        return recorded_step(results, name)

    try:
        t0 = time.monotonic()
        # Timed apart from the steps: under TCG the imports are a large share of the run.
        import pyroute2  # noqa: F401

        import pgvip.dataplane.balancer.choice  # noqa: F401
        import pgvip.dataplane.balancer.realserver  # noqa: F401

        results["timings"]["import_s"] = round(time.monotonic() - t0, 2)
        await scenario(results, step)
    except StepFailed:
        pass
    except BaseException:
        results["error"] = {"step": "(outside a step)", "traceback": traceback.format_exc()}
    results["timings"]["scenario_s"] = round(time.monotonic() - started, 2)
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0 if results["error"] is None else 1


def _process_start() -> float:
    # Field 22 of /proc/self/stat is the process start in clock ticks since boot; in a guest
    # that never suspends, time.monotonic() counts from boot too.
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
