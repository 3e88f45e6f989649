"""Where everything in a lab lives: namespace names, fixed host numbers, directories.

The host numbers mirror the seed's Vagrant network and are fixed within whatever
/24 the lab is given: etcd .10, nodes .51.., client .100, RW VIP .50, RO VIP .49.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PREFIX = "pgvip"
DEFAULT_SUBNET = "10.20.30.0/24"
DEFAULT_NODES = 3
MIN_NODES = 2
MAX_NODES = 5
LAB_ROOT = Path("/var/lib/pgvip-lab")

ETCD_HOST = 10
FIRST_NODE_HOST = 51
CLIENT_HOST = 100
RW_VIP_HOST = 50
RO_VIP_HOST = 49
PATRONI_PORT = 8008
PG_PORT = 5432
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres"
REPLICATION_USER = "replicator"
REPLICATION_PASSWORD = "replicator"


class LayoutError(ValueError):
    """A lab parameter is out of range (bad node count, subnet, or prefix)."""


@dataclass(frozen=True)
class LabLayout:
    prefix: str = DEFAULT_PREFIX
    subnet: ipaddress.IPv4Network = ipaddress.IPv4Network(DEFAULT_SUBNET)
    nodes: int = DEFAULT_NODES
    root: Path = LAB_ROOT

    @classmethod
    def create(
        cls,
        prefix: str = DEFAULT_PREFIX,
        subnet: str = DEFAULT_SUBNET,
        nodes: int = DEFAULT_NODES,
        root: Path = LAB_ROOT,
    ) -> LabLayout:
        if not MIN_NODES <= nodes <= MAX_NODES:
            raise LayoutError(f"--nodes must be {MIN_NODES} to {MAX_NODES}, got {nodes}")
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as exc:
            raise LayoutError(
                f"--subnet must be an IPv4 A.B.C.0/24, got {subnet!r}: {exc}"
            ) from exc
        if net.prefixlen != 24:
            raise LayoutError(f"--subnet must be a /24, got {subnet!r}")
        # Namespace names become interface names on the switch (<= 15 chars).
        if not prefix or len(prefix) > 8 or not all(c.isalnum() or c == "-" for c in prefix):
            raise LayoutError(
                f"--prefix must be 1-8 characters of letters, digits or '-', got {prefix!r}"
            )
        return cls(prefix=prefix, subnet=net, nodes=nodes, root=root)

    # -- names ---------------------------------------------------------
    def node_names(self) -> list[str]:
        return [f"p{i}" for i in range(1, self.nodes + 1)]

    def namespace(self, host: str) -> str:
        """Namespace of a host: 'sw', 'etcd', 'client' or a node name."""
        return f"{self.prefix}-{host}"

    @property
    def switch_ns(self) -> str:
        return self.namespace("sw")

    @property
    def etcd_ns(self) -> str:
        return self.namespace("etcd")

    @property
    def client_ns(self) -> str:
        return self.namespace("client")

    def all_namespaces(self) -> list[str]:
        hosts = ["sw", "etcd", "client", *self.node_names()]
        return [self.namespace(h) for h in hosts]

    @property
    def bridge(self) -> str:
        return "br0"

    def switch_port(self, host: str) -> str:
        """The switch-side veth of a host (host 'p1' -> 'v-p1')."""
        return f"v-{host}"

    # -- addresses -----------------------------------------------------
    def _host(self, n: int) -> ipaddress.IPv4Address:
        return self.subnet.network_address + n

    @property
    def etcd_ip(self) -> ipaddress.IPv4Address:
        return self._host(ETCD_HOST)

    @property
    def client_ip(self) -> ipaddress.IPv4Address:
        return self._host(CLIENT_HOST)

    @property
    def rw_vip(self) -> ipaddress.IPv4Address:
        return self._host(RW_VIP_HOST)

    @property
    def ro_vip(self) -> ipaddress.IPv4Address:
        return self._host(RO_VIP_HOST)

    def node_ip(self, node: str) -> ipaddress.IPv4Address:
        index = self.node_names().index(node)
        return self._host(FIRST_NODE_HOST + index)

    def host_ip(self, host: str) -> ipaddress.IPv4Address:
        if host == "etcd":
            return self.etcd_ip
        if host == "client":
            return self.client_ip
        return self.node_ip(host)

    @property
    def routed_client_subnet(self) -> ipaddress.IPv4Network:
        """The client subnet behind the L3 fabric's router (pgvip.lab.bgp_fabric): 10.21.C.0/24
        for a lab on 10.20.C.0/24 (the same third octet)."""
        return ipaddress.IPv4Network(f"10.21.{self.subnet.network_address.packed[2]}.0/24")

    def patroni_url(self, node: str) -> str:
        return f"http://{self.node_ip(node)}:{PATRONI_PORT}"

    # -- directories -----------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.root / self.prefix

    @property
    def state_file(self) -> Path:
        return self.base_dir / "state.json"

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "logs"

    def node_dir(self, node: str) -> Path:
        return self.base_dir / node

    def data_dir(self, node: str) -> Path:
        return self.node_dir(node) / "data"

    def socket_dir(self, node: str) -> Path:
        return self.node_dir(node) / "sock"

    @property
    def etcd_dir(self) -> Path:
        return self.base_dir / "etcd"
