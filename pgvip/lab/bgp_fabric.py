"""A routed fabric around a running lab, for pgvip's L3 (BGP) mode: FRR routers on the lab's
switch that peer with every node, a client subnet behind the first router, and each node's
pgvip run with `rw.announce = "bgp"` so that the VIPs reach the client only as routes.

    client (10.21.C.100) -- r1 (10.21.C.1 | 10.20.C.1) --+-- switch -- p1, p2, p3
                                   r2 (10.20.C.2) -------+     (10.20.C.51..)

The VIPs are /32s of 10.22.C.0/24, a subnet that exists nowhere but in the routes. The
lab's subnet is 10.20.C.0/24; both extra subnets get an `unreachable` route in the root
namespace while the fabric exists. Processes (zebra, bgpd) are recorded in the lab's state
file, and the namespaces too, so `Lab.down()` removes them even after a crash.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgvip.lab import netns, processes
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.state import ProcessEntry
from pgvip.lab.toml_text import toml_text

FRR_DIR = Path("/usr/lib/frr")
ROUTER_AS = 65000
FIRST_NODE_AS = 65101
CLIENT_HOST = 100
RW_HOST = 50
RO_HOST = 49


@dataclass(frozen=True)
class Fabric:
    """Names and addresses of the fabric around the lab with layout `lab.layout`."""

    lab: Lab
    routers: int = 2

    @property
    def _octet(self) -> int:
        return int(self.lab.layout.subnet.network_address.packed[2])

    @property
    def client_subnet(self) -> ipaddress.IPv4Network:
        return self.lab.layout.routed_client_subnet

    @property
    def vip_subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.22.{self._octet}.0/24")

    @property
    def rw_vip(self) -> ipaddress.IPv4Address:
        return self.vip_subnet.network_address + RW_HOST

    @property
    def ro_vip(self) -> ipaddress.IPv4Address:
        return self.vip_subnet.network_address + RO_HOST

    @property
    def client_ip(self) -> ipaddress.IPv4Address:
        return self.client_subnet.network_address + CLIENT_HOST

    def router_names(self) -> list[str]:
        return [f"r{i}" for i in range(1, self.routers + 1)]

    def router_ns(self, router: str) -> str:
        return self.lab.layout.namespace(router)

    @property
    def client_ns(self) -> str:
        return self.lab.layout.namespace("bc")

    def router_ip(self, router: str) -> ipaddress.IPv4Address:
        return self.lab.layout.subnet.network_address + int(router[1:])

    def node_as(self, node: str) -> int:
        return FIRST_NODE_AS + self.lab.layout.node_names().index(node)

    def router_dir(self, router: str) -> Path:
        return self.lab.layout.base_dir / router

    def namespaces(self) -> list[str]:
        return [*(self.router_ns(r) for r in self.router_names()), self.client_ns]


def frr_config(f: Fabric, router: str, *, bfd: bool = False) -> str:
    """FRR's integrated config for one router: dynamic eBGP neighbours on the lab subnet,
    fast timers, ECMP across the nodes (each has its own AS, hence multipath-relax)."""
    lines = [
        "frr defaults datacenter",
        f"hostname {router}",
        "log stdout informational",
        *(
            ["bfd", " profile pgvip", "  transmit-interval 100", "  receive-interval 100"]
            if bfd
            else []
        ),
        f"router bgp {ROUTER_AS}",
        f" bgp router-id {f.router_ip(router)}",
        " no bgp ebgp-requires-policy",
        " no bgp graceful-restart",
        " bgp bestpath as-path multipath-relax",
        " neighbor nodes peer-group",
        " neighbor nodes remote-as external",
        " neighbor nodes timers 1 3",
        " neighbor nodes timers connect 1",
        " neighbor nodes advertisement-interval 0",
        *([" neighbor nodes bfd", " neighbor nodes bfd profile pgvip"] if bfd else []),
        f" bgp listen range {f.lab.layout.subnet} peer-group nodes",
        " address-family ipv4 unicast",
        "  maximum-paths 8",
        " exit-address-family",
    ]
    return "\n".join(lines) + "\n"


def pgvip_bgp_document(f: Fabric, node: str, **bgp: Any) -> dict[str, dict[str, Any]]:
    """A node's pgvip config in bgp mode (the lab's Patroni, the fabric's routers)."""
    layout = f.lab.layout
    return {
        "patroni": {"url": "http://127.0.0.1:8008", "timeout": 1.0, "poll_interval": 0.1,
                    "rise": 1, "fall": 3},
        "vrrp": {"interface": "eth0"},
        "rw": {"vip": str(f.rw_vip), "announce": "bgp"},
        "ro": {"vip": str(f.ro_vip), "announce": "bgp", "poll_interval": 0.2, "rise": 1},
        "bgp": {
            "local_as": f.node_as(node),
            "peer_as": ROUTER_AS,
            "peers": [str(f.router_ip(r)) for r in f.router_names()],
            "source": str(layout.node_ip(node)),
            "backstop": str(f.vip_subnet),
            "runtime_dir": str(layout.node_dir(node) / "bgp"),
            **bgp,
        },
        "log": {"format": "json", "level": "info"},
    }  # fmt: skip


class FabricBuilder:
    """Builds and removes the fabric; the lab must be up (pgvip=False) and stays up."""

    def __init__(self, fabric: Fabric) -> None:
        self.f = fabric
        self.lab = fabric.lab

    def _record(self, host: str, what: str, proc: processes.ProcessId, argv: list[str]) -> None:
        entry = ProcessEntry(host, what, proc.pid, proc.start_time, argv, time.time())
        with self.lab.store.update() as state:
            state.processes[entry.key] = entry

    def up(self, *, bfd: bool = False, **bgp: Any) -> None:
        f, layout = self.f, self.lab.layout
        with self.lab.store.update() as state:
            state.namespaces = list(dict.fromkeys([*state.namespaces, *f.namespaces()]))
        for subnet in (f.client_subnet, f.vip_subnet):
            netns.add_unreachable_route(subnet)
        lines = [f"netns add {ns}" for ns in f.namespaces()]
        sw = layout.switch_ns
        lines += [
            f"link add eth0 netns {f.router_ns(r)} type veth peer name v-{r} netns {sw}"
            for r in f.router_names()
        ]
        first = f.router_ns("r1")
        lines.append(f"link add eth1 netns {first} type veth peer name eth0 netns {f.client_ns}")
        netns.batch(lines)
        netns.batch([f"link set v-{r} master {layout.bridge} up" for r in f.router_names()],
                    ns=layout.switch_ns)  # fmt: skip
        plen = layout.subnet.prefixlen
        for r in f.router_names():
            netns.batch(["link set lo up", f"addr add {f.router_ip(r)}/{plen} dev eth0",
                         "link set eth0 up"], ns=f.router_ns(r))  # fmt: skip
            netns.run(
                ["ip", "netns", "exec", f.router_ns(r), "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                check=True,
            )
            # ECMP by flow (addresses and ports), not by address pair: one client host's
            # connections then spread over the RO replicas, as on a real L3 switch.
            netns.run(["ip", "netns", "exec", f.router_ns(r), "sysctl", "-qw",
                       "net.ipv4.fib_multipath_hash_policy=1"], check=True)  # fmt: skip
        gw = f.client_subnet.network_address + 1
        netns.batch([f"addr add {gw}/24 dev eth1", "link set eth1 up"], ns=first)
        netns.batch(["link set lo up", f"addr add {f.client_ip}/24 dev eth0", "link set eth0 up",
                     f"route add default via {gw}"], ns=f.client_ns)  # fmt: skip
        # The nodes answer the client through r1 (the lab's nodes have no default route).
        for node in layout.node_names():
            netns.batch([f"route add {f.client_subnet} via {f.router_ip('r1')}"],
                        ns=layout.namespace(node))  # fmt: skip
        for r in f.router_names():
            self._start_frr(r, bfd=bfd)
        self._write_pgvip_configs(bfd=bfd, **bgp)

    def _start_frr(self, router: str, *, bfd: bool) -> None:
        d = self.f.router_dir(router)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        frr = pwd.getpwnam("frr")
        os.chown(d, frr.pw_uid, frr.pw_gid)
        conf = d / "frr.conf"
        conf.write_text(frr_config(self.f, router, bfd=bfd))
        os.chown(conf, frr.pw_uid, frr.pw_gid)
        common = ["-u", "frr", "-g", "frr", "-f", str(conf), "-z", str(d / "zserv.api"),
                  "--vty_socket", str(d), "-P", "0"]  # fmt: skip
        daemons = ["zebra", "bgpd", *(["bfdd"] if bfd else [])]
        for daemon in daemons:
            argv = [str(FRR_DIR / daemon), *common, "-i", str(d / f"{daemon}.pid")]
            if daemon == "bfdd":
                argv += ["--bfdctl", str(d / "bfdd.sock")]
            proc = processes.spawn(
                netns.exec_argv(self.f.router_ns(router), argv),
                self.lab.layout.log_dir / f"{router}-{daemon}.log",
            )
            self._record(router, daemon, proc, argv)
            if daemon == "zebra":
                self._wait_path(d / "zserv.api", f"zebra on {router}")

    def _wait_path(self, path: Path, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise LabError(f"{what} did not create {path} within {timeout:g} s")
            time.sleep(0.05)

    def _write_pgvip_configs(self, **bgp: Any) -> None:
        if not bgp.get("bfd"):
            bgp.pop("bfd", None)
        for node in self.lab.layout.node_names():
            path = self.lab.pgvip_config_path(node)
            doc = pgvip_bgp_document(self.f, node, **bgp)
            path.write_text(toml_text(doc, header=f"# pgvip (bgp mode) of {node}"))
            path.chmod(0o644)
            run_dir = self.lab.layout.node_dir(node) / "bgp"
            run_dir.mkdir(exist_ok=True)
            pg = pwd.getpwnam("pgvip")
            os.chown(run_dir, pg.pw_uid, pg.pw_gid)
        self.lab.pgvip = True
        with self.lab.store.update() as state:
            state.pgvip = True

    def start_pgvip(self) -> None:
        for node in self.lab.layout.node_names():
            self.lab.start(node, "pgvip")

    def down(self) -> None:
        """Remove the fabric's unreachable routes (Lab.down removes the rest)."""
        for subnet in (self.f.client_subnet, self.f.vip_subnet):
            if netns.has_unreachable_route(subnet):
                netns.delete_unreachable_route(subnet)

    # -- observation -------------------------------------------------------------

    def vtysh(self, router: str, command: str) -> Any:
        proc = netns.run(["vtysh", "--vty_socket", str(self.f.router_dir(router)), "-c", command],
                         check=True)  # fmt: skip
        return json.loads(proc.stdout or "{}")

    def established(self, router: str) -> set[str]:
        """Addresses of the nodes with an established session on `router`."""
        peers = self.vtysh(router, "show bgp ipv4 unicast summary json").get("peers", {})
        return {addr for addr, p in peers.items() if p.get("state") == "Established"}
