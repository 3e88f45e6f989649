"""Renders the BIRD 2 configuration for pgvip's speaker: one BGP session per router, and an
export filter that lets out exactly the VIPs found on the bgp interface. Pure text."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The port BIRD listens on. pgvip connects to the routers (port 179); the listener is never
# used but always opened, and a port below 1024 would need CAP_NET_BIND_SERVICE.
LISTEN_PORT = 1179
CONNECT_RETRY = 1  # seconds between attempts to (re)open a session


@dataclass(frozen=True)
class SpeakerSettings:
    interface: str  # where the VIPs are (lo)
    vips: tuple[IPAddress, ...]  # the only prefixes ever exported, as /32 or /128
    source: IPAddress  # the sessions' local address and the routes' next hop
    local_as: int
    peer_as: int
    peers: tuple[IPAddress, ...]
    hold_time: int
    bfd: bool = False
    bfd_interval: float = 0.1
    backstop: IPNetwork | None = None  # announced always, from every node

    def __post_init__(self) -> None:
        if not self.peers:
            raise ValueError("no BGP peers")
        if self.hold_time < 3:
            raise ValueError(f"hold_time must be at least 3 s, got {self.hold_time}")
        families = {a.version for a in (self.source, *self.peers, *self.vips)}
        if self.backstop is not None:
            families.add(self.backstop.version)
        if len(families) != 1:
            raise ValueError("the source, the peers and the VIPs must be of one address family")

    @property
    def version(self) -> int:
        return self.source.version

    @property
    def keepalive_time(self) -> int:
        return max(1, self.hold_time // 3)


def router_id(source: IPAddress) -> str:
    """BIRD's router id is 32 bits written as IPv4: the source itself, or its last 32 bits."""
    if isinstance(source, ipaddress.IPv4Address):
        return str(source)
    return str(ipaddress.IPv4Address(int(source) & 0xFFFFFFFF or 1))


def session_name(index: int) -> str:
    return f"pgvip_peer{index + 1}"


def render(s: SpeakerSettings) -> str:
    channel = f"ipv{s.version}"
    host = 32 if s.version == 4 else 128
    nets = [f"{v}/{host}" for v in s.vips] + ([str(s.backstop)] if s.backstop else [])
    prefixes = ", ".join(nets)
    # An empty prefix set is not valid BIRD syntax; "reject all" is what it would mean.
    accept = f"if net ~ [ {prefixes} ] then accept; " if prefixes else ""
    lines = [
        "# Written by pgvip at every start; edits are lost. See pgvip's [bgp] settings.",
        "log stderr all;",
        f"router id {router_id(s.source)};",
        "protocol device { scan time 10; }",
        "protocol direct pgvip_vips {",
        f"  {channel};",
        f'  interface "{s.interface}";',
        "}",
        f"filter pgvip_export {{ {accept}reject; }}",
    ]
    if s.backstop is not None:
        # Never installed here (no kernel protocol): only announced, as the VIPs' fallback.
        lines += [f"protocol static pgvip_backstop {{ {channel}; route {s.backstop} blackhole; }}"]
    if s.bfd:
        ms = max(1, round(s.bfd_interval * 1000))
        lines += [
            "protocol bfd pgvip_bfd {",
            f'  interface "*" {{ min rx interval {ms} ms; min tx interval {ms} ms; '
            "multiplier 3; };",
            "}",
        ]
    for i, peer in enumerate(s.peers):
        lines += [
            f"protocol bgp {session_name(i)} {{",
            f"  local {s.source} port {LISTEN_PORT} as {s.local_as};",
            f"  neighbor {peer} port 179 as {s.peer_as};",
            f"  hold time {s.hold_time}; keepalive time {s.keepalive_time};",
            f"  connect delay time {CONNECT_RETRY}; connect retry time {CONNECT_RETRY};",
            "  error wait time 1, 4;",
            # A restarting speaker's routes must not be kept by the routers: the node that
            # restarts may no longer be the leader.
            "  graceful restart off; long lived graceful restart off;",
            *(["  bfd on;"] if s.bfd else []),
            f"  {channel} {{ import none; export filter pgvip_export; next hop self; }};",
            "}",
        ]
    return "\n".join(lines) + "\n"
