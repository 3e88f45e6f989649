"""The stale-ARP guard: a node answers TCP for a VIP it does not hold with a reset.

When a VIP moves, clients keep the old holder's MAC in their neighbour cache until the new
holder's gratuitous ARP (or NA) reaches them. A connection attempt sent in that window reaches
the old holder, where the address is no longer local: the kernel drops it silently and the
client waits out its connect timeout, or libpq's first SYN retransmit (1 s). With this guard the
old holder answers with a TCP reset instead, so the client fails at once and retries, and its
next attempt after the announcement reaches the new holder.

It is one nftables table (`inet pgvip_guard`) with a prerouting chain that runs before
conntrack and routing. Each VIP gets one rule, `fib daddr type != local`: while this node holds
the VIP the rule never matches and connections are accepted as usual, so the guard never makes
a second host accept connections for a VIP. It is stateless and idempotent, so it is installed
at start-up on every node, checked periodically, and left in place when the daemon stops, to
cover the handoff that the stop itself starts; `pgvip release` removes it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from pgvip.dataplane.balancer import LoadBalancerError
from pgvip.dataplane.balancer.nftables import find_nft
from pgvip.dataplane.command import run_command
from pgvip.naming import GUARD_TABLE

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

TABLE = GUARD_TABLE  # an unnamed instance's; `naming.StateNames.guard_table`
# Before conntrack (-200) and the RO director's DNAT (-100): nothing is tracked for a packet
# that is answered here.
PRIORITY = -300
_RULE = re.compile(r"ip6? daddr (\S+) fib daddr type != local meta l4proto tcp reject")


class GuardError(RuntimeError):
    """The guard could not be installed, read or removed (no nft, nft refused the table)."""


def ruleset(vips: Sequence[IPAddress], table: str = TABLE) -> str:
    """The nft script that replaces the guard table atomically with one rule per VIP."""
    if not vips:
        raise GuardError("the stale-ARP guard needs at least one VIP")
    rules = "".join(
        f"    {'ip' if vip.version == 4 else 'ip6'} daddr {vip} "
        "fib daddr type != local meta l4proto tcp reject with tcp reset\n"
        for vip in sorted(set(vips), key=lambda v: (v.version, int(v)))
    )
    return (
        # Create-then-delete makes the delete succeed whether or not the table existed; the
        # whole script is one transaction, so a refused table leaves the old one in place.
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain prerouting {{\n"
        f"    type filter hook prerouting priority {PRIORITY}; policy accept;\n"
        f"{rules}"
        f"  }}\n"
        f"}}\n"
    )


def guarded_vips(listing: str) -> set[IPAddress]:
    """The VIPs the rules in `nft list table inet pgvip_guard` output reset for."""
    return {ipaddress.ip_address(m.group(1)) for m in _RULE.finditer(listing)}


class StaleGuard:
    """Installs, checks and removes the guard table (optionally inside a network namespace)."""

    def __init__(
        self, vips: Iterable[IPAddress], *, netns: str | None = None, table: str = TABLE
    ) -> None:
        self.vips = tuple(dict.fromkeys(vips))
        self.netns = netns
        self.table = table
        self.installs = 0

    def _argv(self, *args: str) -> list[str]:
        nft = find_nft()
        if nft is None:
            raise GuardError("cannot run 'nft': not found (install the 'nftables' package)")
        return [nft, *args]

    async def installed(self) -> set[IPAddress]:
        """The VIPs the table in the kernel guards now (empty if there is no table)."""
        try:
            listing = await run_command(
                self._argv("list", "table", "inet", self.table), netns=self.netns
            )
        except LoadBalancerError as exc:
            if "No such file or directory" in str(exc):
                return set()  # no table yet
            raise GuardError(f"cannot read the nftables table {self.table}: {exc}") from exc
        return guarded_vips(listing)

    async def ensure(self) -> bool:
        """Install the table unless it already guards exactly our VIPs; True if installed."""
        if await self.installed() == set(self.vips):
            return False
        try:
            await run_command(
                self._argv("-f", "-"), stdin=ruleset(self.vips, self.table), netns=self.netns
            )
        except LoadBalancerError as exc:
            raise GuardError(f"cannot install the nftables table {self.table}: {exc}") from exc
        self.installs += 1
        return True

    async def remove(self) -> bool:
        """Delete the table; True if there was one."""
        try:
            await run_command(self._argv("delete", "table", "inet", self.table), netns=self.netns)
        except LoadBalancerError as exc:
            if "No such file or directory" in str(exc):
                return False
            raise GuardError(f"cannot remove the nftables table {self.table}: {exc}") from exc
        return True
