"""One-armed IPVS NAT: the masquerade that lets IPVS "nat" work on one flat subnet.

IPVS NAT rewrites only the destination. On a flat LAN a replica's reply to a client on the
same subnet (or behind the LAN router, its default gateway) then goes straight to the client,
from the replica's own address; the client resets it and its connect times out. Measured in
the qemu guest (Debian 6.1, client, director and two replicas on one bridge): 0 of 10
connections. Two things together make it work, 10 of 10 (either alone: 0):

* `net.ipv4.vs.conntrack = 1` (also for IPv6: IPVS keeps its sysctls under net/ipv4/vs), so
  IPVS connections get conntrack entries that nftables NAT can act on;
* a masquerade, in the director, of connections whose *original* destination is VIP:port.

The replica then sees the director's address as the client, its reply comes back to the
director, and IPVS rewrites it to come from the VIP. This module is that masquerade: one
nftables table, `inet pgvip_ipvs`, replaced whole in one transaction, read back so drift heals,
removed when the director stops directing and by `pgvip release`.
"""

from __future__ import annotations

import ipaddress
import re

from pgvip.dataplane.balancer import IPAddress, LoadBalancerError
from pgvip.dataplane.command import run_command
from pgvip.naming import MASQUERADE_TABLE

__all__ = ["CONNTRACK_SYSCTL", "TABLE", "IpvsMasquerade", "parse", "ruleset"]

TABLE = MASQUERADE_TABLE  # an unnamed instance's; `naming.StateNames.masquerade_table`
CONNTRACK_SYSCTL = {"net/ipv4/vs/conntrack": "1"}
_RULE = re.compile(
    r"meta l4proto tcp ct original ip6? daddr (\S+) ct original proto-dst (\d+) masquerade"
)


def ruleset(vip: IPAddress, port: int, table: str = TABLE) -> str:
    """The nft script that replaces table inet `table` with the masquerade for vip:port."""
    family = "ip" if vip.version == 4 else "ip6"
    return (
        # Create-then-delete: the delete succeeds whether or not the table existed, and the
        # whole script is one transaction.
        f"table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain postrouting {{\n"
        f"    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    meta l4proto tcp ct original {family} daddr {vip} ct original proto-dst {port} "
        f"masquerade\n"
        f"  }}\n"
        f"}}\n"
    )


def parse(listing: str) -> set[tuple[IPAddress, int]]:
    """The (vip, port) masquerades in `nft list table inet pgvip_ipvs` output."""
    found: set[tuple[IPAddress, int]] = set()
    for m in _RULE.finditer(listing):
        try:
            found.add((ipaddress.ip_address(m.group(1)), int(m.group(2))))
        except ValueError:
            continue
    return found


class IpvsMasquerade:
    """The table for one director, optionally inside `netns` (through `ip netns exec`)."""

    def __init__(self, nft: str | None, *, netns: str | None = None, table: str = TABLE) -> None:
        self.nft = nft  # None: nft is not installed, so there can be no table to find
        self.netns = netns
        self.table = table

    async def current(self) -> set[tuple[IPAddress, int]] | None:
        """The masquerades in place; None when there is no table."""
        if self.nft is None:
            return None
        tables = await self._nft(["list", "tables"])
        if f"table inet {self.table}" not in tables.splitlines():
            return None
        return parse(await self._nft(["list", "table", "inet", self.table]))

    async def ensure(self, vip: IPAddress, port: int) -> bool:
        """Make the table hold exactly the masquerade for vip:port; True if it changed."""
        if self.nft is None:
            raise LoadBalancerError(
                "IPVS 'nat' forwarding needs the 'nft' command for its one-armed masquerade "
                "(install the 'nftables' package, or use ro.forwarding = 'dr')"
            )
        if await self.current() == {(vip, port)}:
            return False
        try:
            await self._nft(["-f", "-"], stdin=ruleset(vip, port, self.table))
        except LoadBalancerError as exc:
            raise LoadBalancerError(
                f"IPVS one-armed NAT: cannot install the masquerade for {vip}:{port}: {exc}"
            ) from exc
        return True

    async def remove(self) -> bool:
        """Delete the table; True if there was one."""
        if await self.current() is None:
            return False
        script = f"table inet {self.table}\ndelete table inet {self.table}\n"
        await self._nft(["-f", "-"], stdin=script)
        return True

    async def _nft(self, args: list[str], stdin: str | None = None) -> str:
        assert self.nft is not None
        return await run_command([self.nft, *args], stdin=stdin, netns=self.netns)
