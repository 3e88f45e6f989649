"""End the connections of a backend that left the nftables table: `ro.drain_timeout` there.

nftables DNAT binds a connection to its backend in conntrack for the connection's whole life,
so without this a backend removed from the table would keep its established connections for
as long as they last (days, for a pooled PostgreSQL session). pgvip keeps a leaving backend at
weight 0 for `ro.drain_timeout` (no slot: no new connections, established ones flow on) and
then removes it; `cut_connections` deletes, at that removal, the conntrack entries of the
connections that were DNATed from VIP:port to it.

The next packet of such a connection is no connection attempt, so no rule DNATs it: it reaches
the director's own stack, which has no socket for it and answers with a reset. The client sees
its connection end and reconnects through the VIP at once, instead of writing into a backend
that is gone. IPVS does the same with `net.ipv4.vs.expire_nodest_conn = 1`.
"""

from __future__ import annotations

import socket
from collections.abc import Collection

from pgvip.dataplane.balancer import IPAddress, LoadBalancerError

__all__ = ["cut_connections"]

# TCP conntrack states of connections that are over (TIME_WAIT, CLOSE): nothing to end, and
# there are thousands of them after a busy drain (a short-lived client's, for 120 s).
CLOSED_STATES = frozenset({7, 8})


async def cut_connections(
    vip: IPAddress,
    port: int,
    backends: Collection[tuple[IPAddress, int]],
    *,
    netns: str | None = None,
) -> int:
    """Delete the conntrack entries of TCP connections to vip:port DNATed to `backends`;
    return how many. An entry that vanished meanwhile (closed, timed out) is not an error."""
    if not backends:
        return 0
    from pyroute2.conntrack import AsyncConntrack
    from pyroute2.netlink.exceptions import NetlinkError
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    gone = {(str(address), port) for address, port in backends}
    to_vip = NFCTAttrTuple(family=family, proto=socket.IPPROTO_TCP, daddr=str(vip), dport=port)
    kwargs = {"netns": netns, "flags": 0} if netns else {}
    cut = 0
    try:
        async with AsyncConntrack(**kwargs) as ct:
            # Collect first: deleting while the kernel streams the dump can skip entries.
            doomed = [
                entry
                async for entry in await ct.dump_entries(tuple_orig=to_vip)
                if (entry.tuple_reply.saddr, entry.tuple_reply.sport) in gone
                and (entry.protoinfo is None or entry.protoinfo.state not in CLOSED_STATES)
            ]
            for entry in doomed:
                try:
                    # By the reply tuple, which names the drained backend: the original one
                    # (client address and port to the VIP) may by now belong to a new
                    # connection that reused the client port and was DNATed elsewhere.
                    await ct.entry("del", tuple_reply=entry.tuple_reply)
                    cut += 1
                except NetlinkError as exc:
                    if exc.code != 2:  # ENOENT: it ended on its own meanwhile
                        raise
    except (OSError, NetlinkError) as exc:
        raise LoadBalancerError(f"cannot end the drained backends' connections: {exc}") from exc
    return cut
