"""The nftables RO balancer: numgen round-robin DNAT + masquerade, one atomic `nft -j -f -` each.

`NftablesLoadBalancer` renders the table with `nft_ruleset.build_document`, reads it back with
`nft_readback.parse_table`, runs nft (optionally through `ip netns exec`) and sets the forwarding
sysctls a director needs. The table's layout is described in `nft_ruleset`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import ClassVar

from pgvip.dataplane.balancer import IPAddress, LoadBalancerError, VirtualService
from pgvip.dataplane.balancer.conntrack_cut import cut_connections
from pgvip.dataplane.balancer.nft_readback import parse_table
from pgvip.dataplane.balancer.nft_ruleset import build_document, check, normalise
from pgvip.dataplane.command import run_command
from pgvip.dataplane.sysctl import PROC_SYS, SysctlKeeper, forwarding_sysctls
from pgvip.naming import StateNames


# -- forwarding sysctls ------------------------------------------------------------
def required_sysctls(interface: str | None = None, family: int = 4) -> dict[str, str]:
    """What a director needs in /proc/sys (see `sysctl.forwarding_sysctls`)."""
    return forwarding_sysctls(interface, family)


# -- the balancer ------------------------------------------------------------------
def find_nft() -> str | None:
    """The nft binary; also looked for in the sbin directories, which a service's or a
    user's PATH often lacks."""
    return shutil.which("nft") or shutil.which("nft", path="/usr/local/sbin:/usr/sbin:/sbin")


class NftablesLoadBalancer:
    """LoadBalancer over table ip/ip6 pgvip (pgvip-NAME for instance NAME, `pgvip.naming`).

    `interface` is where the VIP lives (its send_redirects is turned off); `netns` runs every
    command through `ip netns exec`; `service` is accepted for the common constructor and
    unused (the table's name is its identity); `instance` names the table and the claims on
    the forwarding sysctls (`sysctl.SysctlKeeper`).

    With `manage_sysctls`, apply() enables forwarding and clear() restores each sysctl it
    changed, unless someone changed it again since: a node that is no longer the director
    should not stay a router by accident.

    Draining: a weight-0 backend has no slot (no new connections; established ones keep their
    conntrack binding). When a backend then leaves the desired set altogether (pgvip does that
    after `ro.drain_timeout`), apply() ends its remaining connections (`conntrack_cut`), as
    IPVS does with expire_nodest_conn. It remembers what it was last asked for to know.
    """

    name: ClassVar[str] = "nftables"

    def __init__(
        self,
        *,
        interface: str | None = None,
        netns: str | None = None,
        service: tuple[IPAddress, int] | None = None,
        nft: str | None = None,
        manage_sysctls: bool = True,
        proc_root: Path = PROC_SYS,
        instance: str | None = None,
    ) -> None:
        self.interface = interface
        self.netns = netns
        self.nft = nft or find_nft() or "nft"
        self.manage_sysctls = manage_sysctls
        names = StateNames(instance)
        self.table = names.balancer_table
        self.sysctls = SysctlKeeper(netns=netns, proc_root=proc_root, names=names)
        self._asked: VirtualService | None = None  # the last desired state, weight 0 included
        self.cut = 0  # connections ended because their backend left after its drain

    @classmethod
    def check(cls, scheduler: str, forwarding: str, persistence_timeout: int) -> None:
        check(scheduler, forwarding, persistence_timeout)

    async def apply(self, desired: VirtualService) -> bool:
        want = normalise(desired)
        changed = False
        if self.manage_sysctls:
            changed = await self.sysctls.ensure(required_sysctls(self.interface, want.vip.version))
        try:
            current = await self.actual()
        except LoadBalancerError:
            current = None  # a foreign or damaged table: replace it whole
        if current != want:
            await self._nft(["-j", "-f", "-"], stdin=json.dumps(build_document(want, self.table)))
            changed = True
        left = self._departed(desired)
        if left:  # after the table: no new connection can reach them any more
            self.cut += await cut_connections(want.vip, want.port, left, netns=self.netns)
        self._asked = desired  # only now: a failed cut is retried by the next apply
        return changed

    def _departed(self, desired: VirtualService) -> set[tuple[IPAddress, int]]:
        """Backends of the previous desired state (draining ones too) that `desired` lacks."""
        before = self._asked
        if before is None or (before.vip, before.port) != (desired.vip, desired.port):
            return set()
        keep = {(rs.address, rs.port) for rs in desired.backends}
        return {(rs.address, rs.port) for rs in before.backends} - keep

    async def actual(self) -> VirtualService | None:
        tables = json.loads(await self._nft(["-j", "list", "tables"]))
        families = [
            t["table"]["family"]
            for t in tables.get("nftables", [])
            if "table" in t
            and t["table"].get("name") == self.table
            and t["table"].get("family") in ("ip", "ip6")
        ]
        if not families:
            return None
        if len(families) > 1:
            raise LoadBalancerError(f"more than one {self.table} table ({', '.join(families)})")
        listing = await self._nft(["-j", "list", "table", families[0], self.table])
        return parse_table(json.loads(listing), self.table)

    async def clear(self) -> None:
        self._asked = None
        await self._nft(["-j", "-f", "-"], stdin=json.dumps(build_document(None, self.table)))
        await self.sysctls.restore()

    async def _nft(self, args: list[str], stdin: str | None = None) -> str:
        return await run_command([self.nft, *args], stdin=stdin, netns=self.netns)
