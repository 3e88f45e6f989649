"""The nftables ruleset pgvip writes (pure): what nftables can do, its normal form, the JSON.

`build_document` renders a VirtualService as ONE nft JSON transaction that replaces table
`ip pgvip` (or `ip6 pgvip`) whole, so a rejected document leaves the old table in place.
`nft_readback.parse_table` reads it back; `nftables.NftablesLoadBalancer` runs nft.

Table layout, for VIP V and port P:

* `prerouting` (nat, dstnat) and `output` (nat, -100, for clients on the director itself):
  `ip daddr V tcp dport P tcp flags syn / fin,syn,rst,ack dnat ip to numgen inc mod N map
  { 0 : addr . port, ... }`. Weights become slots (wrr; interleaved so a heavy backend does
  not get its slots in one burst).
* `postrouting` (nat, srcnat): masquerade connections that we DNATed from V:P, so replies
  come back through the director (one-armed director, backends keep their default route).
* `input` (filter): `ip daddr V tcp dport P tcp flags syn / fin,syn,rst,ack reject with tcp
  reset`. Only traffic that was NOT DNATed reaches it, i.e. when no backend is left: the client
  gets a reset at once instead of silently reaching the director's own PostgreSQL (which may be
  the primary).
* Every rule that matches V:P matches connection attempts (a bare SYN) only. The VIP is up
  before the first apply (the director warms up its probes first), so the director's own
  PostgreSQL may accept a connection in that gap. Until a nat table exists the namespace may not
  track connections at all; once it does, conntrack picks that connection's next packet up as
  NEW, and a rule matching any packet would DNAT it elsewhere or reset it. A SYN-only rule lets
  it through with a null NAT binding.

What nftables cannot express is normalised away, and `actual()` returns that normal form:
weight-0 backends get no slot (new connections avoid them, established ones keep their
conntrack NAT binding, which is exactly draining), rr gives every backend one slot, and wrr
weights are divided by their gcd.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pgvip.dataplane.balancer import LoadBalancerError, RealServer, VirtualService, check_names
from pgvip.naming import BALANCER_TABLE

TABLE = BALANCER_TABLE  # an unnamed instance's; `naming.StateNames.balancer_table`
NFT_SCHEDULERS = frozenset({"rr", "wrr"})
MAX_SLOTS = 1024
COMMENT_PREFIX = "pgvip scheduler="

_FAMILIES = {4: "ip", 6: "ip6"}
# (chain name, type, hook, priority): the numbers are what `nft -j list` reports back.
CHAINS = (
    ("prerouting", "nat", "prerouting", -100),
    ("output", "nat", "output", -100),
    ("postrouting", "nat", "postrouting", 100),
    ("input", "filter", "input", 0),
)

Json = dict[str, Any]


# -- the document (pure) -------------------------------------------------------
def check(scheduler: str, forwarding: str, persistence_timeout: int) -> None:
    """Raise LoadBalancerError unless nftables can do this scheduler/forwarding/persistence."""
    check_names(scheduler, forwarding)
    if scheduler not in NFT_SCHEDULERS:
        raise LoadBalancerError(
            f"scheduler {scheduler!r} needs IPVS; the nftables dataplane supports rr and wrr"
        )
    if forwarding != "nat":
        raise LoadBalancerError(
            f"forwarding {forwarding!r} needs IPVS; the nftables dataplane supports nat only"
        )
    if persistence_timeout:
        raise LoadBalancerError(
            "persistence_timeout needs IPVS; the nftables dataplane has no persistence "
            f"(got {persistence_timeout} s, use 0)"
        )


def normalise(desired: VirtualService) -> VirtualService:
    """The form of `desired` that the table can hold (and that `parse_table` returns)."""
    check(desired.scheduler, desired.forwarding, desired.persistence_timeout)
    live = [rs for rs in desired.backends if rs.weight > 0]
    if desired.scheduler == "rr":
        live = [replace(rs, weight=1) for rs in live]
    elif live:
        g = math.gcd(*(rs.weight for rs in live))
        live = [replace(rs, weight=rs.weight // g) for rs in live]
    total = sum(rs.weight for rs in live)
    if total > MAX_SLOTS:
        raise LoadBalancerError(
            f"wrr weights need {total} numgen slots; the nftables dataplane allows {MAX_SLOTS} "
            "(use smaller weights)"
        )
    return replace(desired, backends=tuple(live))


def slots(backends: Sequence[RealServer]) -> list[RealServer]:
    """Expand weights into numgen slots, spread out (smooth weighted round-robin order)."""
    total = sum(rs.weight for rs in backends)
    current = [0] * len(backends)
    out: list[RealServer] = []
    for _ in range(total):
        for i, rs in enumerate(backends):
            current[i] += rs.weight
        best = max(range(len(backends)), key=lambda i: (current[i], -i))
        current[best] -= total
        out.append(backends[best])
    return out


def build_document(desired: VirtualService | None, table: str = TABLE) -> Json:
    """One nft JSON transaction: drop table `table` (both families), then add `desired`'s.

    Each delete is preceded by an add of the same table so it cannot fail on a missing one.
    `None` renders the clearing transaction only.
    """
    commands: list[Json] = [{"metainfo": {"json_schema_version": 1}}]
    for fam in ("ip", "ip6"):
        commands.append({"add": {"table": {"family": fam, "name": table}}})
        commands.append({"delete": {"table": {"family": fam, "name": table}}})
    if desired is None:
        return {"nftables": commands}

    vs = normalise(desired)
    fam = _FAMILIES[vs.vip.version]
    vip = str(vs.vip)
    commands.append({"add": {"table": {"family": fam, "name": table}}})
    for name, kind, hook, prio in CHAINS:
        chain: Json = {"family": fam, "table": table, "name": name, "type": kind, "hook": hook}
        chain |= {"prio": prio, "policy": "accept"}
        commands.append({"add": {"chain": chain}})

    to_vip = [
        _match({"payload": {"protocol": fam, "field": "daddr"}}, vip),
        _match({"payload": {"protocol": "tcp", "field": "dport"}}, vs.port),
        CONNECTION_ATTEMPT,
    ]
    if vs.backends:
        order = slots(vs.backends)
        elements = [[i, {"concat": [str(rs.address), rs.port]}] for i, rs in enumerate(order)]
        numgen = {"numgen": {"mode": "inc", "mod": len(order), "offset": 0}}
        dnat = {
            "dnat": {"family": fam, "addr": {"map": {"key": numgen, "data": {"set": elements}}}}
        }
        for chain_name in ("prerouting", "output"):
            rule = {"family": fam, "table": table, "chain": chain_name, "expr": [*to_vip, dnat]}
            commands.append({"add": {"rule": rule}})
    masquerade = [
        _match({"ct": {"key": "status"}}, "dnat", op="in"),
        _match({"ct": {"key": "daddr", "family": fam, "dir": "original"}}, vip),
        _match({"meta": {"key": "l4proto"}}, "tcp"),
        _match({"ct": {"key": "proto-dst", "dir": "original"}}, vs.port),
        {"masquerade": None},
    ]
    commands.append(
        {
            "add": {
                "rule": {"family": fam, "table": table, "chain": "postrouting", "expr": masquerade}
            }
        }
    )
    # rr and wrr with equal weights are the same slots, so the name rides in a comment
    # on the one rule that always exists.
    reject: Json = {"family": fam, "table": table, "chain": "input"}
    reject["comment"] = f"{COMMENT_PREFIX}{vs.scheduler}"
    reject["expr"] = [*to_vip, {"reject": {"type": "tcp reset"}}]
    commands.append({"add": {"rule": reject}})
    return {"nftables": commands}


def _match(left: Json, right: object, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


# `tcp flags syn / fin,syn,rst,ack` (a connection attempt), as nft -j both reads and prints it.
CONNECTION_ATTEMPT: Json = _match(
    {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]},
    "syn",
)
