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

The dump runs in a child process (`python -m pgvip.dataplane.balancer.conntrack_cut`, the
request as JSON on stdin, `{"cut": N}` on stdout). pyroute2 decodes each conntrack entry into
about 10 KiB of Python objects, a 32 KiB netlink datagram (~300 entries) at a time, and after a
drain there are thousands of entries to the VIP (most in TIME_WAIT): in the daemon that was a
burst of several MiB per cut that the allocator kept, so the RO director's RSS grew by
3-9 MiB at each drain end in the soak (issue 14), and the decoding held the event loop. The
child's memory goes back to the system when it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import sys
from collections.abc import Collection, Sequence

from pgvip.dataplane.balancer import IPAddress, LoadBalancerError
from pgvip.dataplane.command import run_command

__all__ = ["cut_connections", "cut_here"]

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
    """Delete the conntrack entries of TCP connections to vip:port DNATed to `backends`, in a
    child process (see the module's docstring); return how many. LoadBalancerError if the
    child fails or answers nonsense."""
    if not backends:
        return 0
    request = {
        "vip": str(vip),
        "port": port,
        "backends": sorted([str(address), p] for address, p in backends),
        "netns": netns,
    }
    argv = [sys.executable, "-m", __name__]
    out = await run_command(argv, stdin=json.dumps(request))
    try:
        cut = json.loads(out)["cut"]
    except (ValueError, KeyError, TypeError) as exc:
        raise LoadBalancerError(f"conntrack cut answered {out.strip()[:200]!r}") from exc
    if not isinstance(cut, int) or isinstance(cut, bool):
        raise LoadBalancerError(f"conntrack cut answered {out.strip()[:200]!r}")
    return cut


async def cut_here(
    vip: IPAddress,
    port: int,
    backends: Collection[tuple[IPAddress, int]],
    *,
    netns: str | None = None,
) -> int:
    """`cut_connections` in this process: what the child runs. An entry that vanished
    meanwhile (closed, timed out) is not an error."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """The child: the request as JSON on stdin, `{"cut": N}` on stdout, or the error on stderr
    and exit status 1."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.parse_args(argv)
    try:
        request = json.load(sys.stdin)
        vip = ipaddress.ip_address(request["vip"])
        backends = [(ipaddress.ip_address(a), int(p)) for a, p in request["backends"]]
        port, netns = int(request["port"]), request.get("netns")
    except (ValueError, KeyError, TypeError) as exc:
        print(f"bad conntrack cut request: {exc}", file=sys.stderr)
        return 1
    try:
        cut = asyncio.run(cut_here(vip, port, backends, netns=netns))
    except LoadBalancerError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps({"cut": cut}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
