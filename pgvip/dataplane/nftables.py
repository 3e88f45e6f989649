"""The nftables RO balancer: numgen round-robin DNAT + masquerade, one atomic `nft -j -f -` each.

`build_document` (pure) renders a VirtualService as ONE nft JSON transaction that replaces table
`ip pgvip` (or `ip6 pgvip`) whole, so a rejected document leaves the old table in place;
`parse_table` reads `nft -j list table` back into a VirtualService. `NftablesLoadBalancer` runs
nft (optionally through `ip netns exec`) and sets the forwarding sysctls a director needs.

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

import ipaddress
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pgvip.dataplane.loadbalancer import (
    PROC_SYS,
    IPAddress,
    LoadBalancerError,
    RealServer,
    SysctlKeeper,
    VirtualService,
    apply_sysctls,
    check_names,
    forwarding_sysctls,
    read_sysctls,
    run_command,
)

__all__ = [
    "CONNECTION_ATTEMPT",
    "NftablesLoadBalancer",
    "apply_sysctls",
    "build_document",
    "check",
    "normalise",
    "parse_table",
    "read_sysctls",
    "required_sysctls",
    "slots",
]

TABLE = "pgvip"
NFT_SCHEDULERS = frozenset({"rr", "wrr"})
MAX_SLOTS = 1024
COMMENT_PREFIX = "pgvip scheduler="

_FAMILIES = {4: "ip", 6: "ip6"}
# (chain name, type, hook, priority): the numbers are what `nft -j list` reports back.
_CHAINS = (
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


def build_document(desired: VirtualService | None) -> Json:
    """One nft JSON transaction: drop any pgvip table (both families), then add `desired`'s.

    Each delete is preceded by an add of the same table so it cannot fail on a missing one.
    `None` renders the clearing transaction only.
    """
    commands: list[Json] = [{"metainfo": {"json_schema_version": 1}}]
    for fam in ("ip", "ip6"):
        commands.append({"add": {"table": {"family": fam, "name": TABLE}}})
        commands.append({"delete": {"table": {"family": fam, "name": TABLE}}})
    if desired is None:
        return {"nftables": commands}

    vs = normalise(desired)
    fam = _FAMILIES[vs.vip.version]
    vip = str(vs.vip)
    commands.append({"add": {"table": {"family": fam, "name": TABLE}}})
    for name, kind, hook, prio in _CHAINS:
        chain: Json = {"family": fam, "table": TABLE, "name": name, "type": kind, "hook": hook}
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
            rule = {"family": fam, "table": TABLE, "chain": chain_name, "expr": [*to_vip, dnat]}
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
                "rule": {"family": fam, "table": TABLE, "chain": "postrouting", "expr": masquerade}
            }
        }
    )
    # rr and wrr with equal weights are the same slots, so the name rides in a comment
    # on the one rule that always exists.
    reject: Json = {"family": fam, "table": TABLE, "chain": "input"}
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


# -- reading the table back (pure) -----------------------------------------------
def parse_table(listing: Mapping[str, Any]) -> VirtualService | None:
    """Turn `nft -j list table <fam> pgvip` (or `list ruleset`) into the VirtualService it holds.

    None if there is no pgvip table. A pgvip table that is not in the shape `build_document`
    writes (hand-edited, half-deleted) raises LoadBalancerError saying what is off.
    """
    items = listing.get("nftables")
    if not isinstance(items, list):
        raise LoadBalancerError("nft -j output has no 'nftables' list")
    tables = [i["table"] for i in items if "table" in i and i["table"].get("name") == TABLE]
    if not tables:
        return None
    if len(tables) > 1:
        fams = ", ".join(str(t.get("family")) for t in tables)
        raise LoadBalancerError(f"more than one pgvip table ({fams}); apply or clear replaces them")
    fam = tables[0].get("family")
    if fam not in ("ip", "ip6"):
        raise LoadBalancerError(f"table {fam} {TABLE} is not an ip/ip6 table")
    where = f"table {fam} {TABLE} is not pgvip's shape"

    chains = {
        c["chain"]["name"]: c["chain"]
        for c in items
        if "chain" in c and c["chain"].get("table") == TABLE and c["chain"].get("family") == fam
    }
    rules: dict[str, list[list[Json]]] = {}
    comments: dict[str, str | None] = {}
    for r in items:
        rule = r.get("rule")
        if rule and rule.get("table") == TABLE and rule.get("family") == fam:
            rules.setdefault(rule["chain"], []).append(rule.get("expr", []))
            comments[rule["chain"]] = rule.get("comment")
    for name, kind, hook, prio in _CHAINS:
        c = chains.get(name)
        if c is None:
            raise LoadBalancerError(f"{where}: chain {name} is missing")
        if (c.get("type"), c.get("hook"), c.get("prio")) != (kind, hook, prio):
            raise LoadBalancerError(
                f"{where}: chain {name} is {c.get('type')}/{c.get('hook')}/{c.get('prio')}, "
                f"expected {kind}/{hook}/{prio}"
            )
    extra = set(chains) - {name for name, *_ in _CHAINS}
    if extra:
        raise LoadBalancerError(f"{where}: unexpected chain(s) {', '.join(sorted(extra))}")

    # The input reject rule always exists, so it names the service even with no backend.
    vip, port = _vip_port(_single(rules, "input", where), fam, where, tail="reject")
    masq = _single(rules, "postrouting", where)
    if not any("masquerade" in e for e in masq) or not _ct_original_daddr_is(masq, vip):
        raise LoadBalancerError(f"{where}: postrouting does not masquerade DNATed {vip}")

    pre = rules.get("prerouting", [])
    out = rules.get("output", [])
    if len(pre) > 1 or len(out) > 1 or len(pre) != len(out):
        raise LoadBalancerError(
            f"{where}: expected one dnat rule in both prerouting and output, "
            f"found {len(pre)} and {len(out)}"
        )
    scheduler = "rr"
    backends: tuple[RealServer, ...] = ()
    if pre:
        pre_slots = _dnat_slots(pre[0], fam, vip, port, where)
        if _dnat_slots(out[0], fam, vip, port, where) != pre_slots:
            raise LoadBalancerError(f"{where}: prerouting and output dnat maps differ")
        counts: dict[tuple[IPAddress, int], int] = {}
        for key in pre_slots:
            counts[key] = counts.get(key, 0) + 1
        backends = tuple(RealServer(a, p, w) for (a, p), w in counts.items())
    comment = comments.get("input") or ""
    if comment.startswith(COMMENT_PREFIX):
        scheduler = comment[len(COMMENT_PREFIX) :]
    elif any(rs.weight > 1 for rs in backends):
        scheduler = "wrr"
    if scheduler == "rr" and any(rs.weight > 1 for rs in backends):
        raise LoadBalancerError(f"{where}: scheduler rr but uneven slots")
    try:
        return VirtualService(vip=vip, port=port, backends=backends, scheduler=scheduler)
    except LoadBalancerError as exc:
        raise LoadBalancerError(f"{where}: {exc}") from exc


def _single(rules: Mapping[str, list[list[Json]]], chain: str, where: str) -> list[Json]:
    found = rules.get(chain, [])
    if len(found) != 1:
        raise LoadBalancerError(f"{where}: expected 1 rule in {chain}, found {len(found)}")
    return found[0]


def _vip_port(expr: list[Json], fam: str, where: str, tail: str) -> tuple[IPAddress, int]:
    vip: IPAddress | None = None
    port: int | None = None
    for e in expr:
        m = e.get("match")
        if not m or m.get("op") != "==":
            continue
        payload = m.get("left", {}).get("payload", {})
        if payload == {"protocol": fam, "field": "daddr"}:
            try:
                vip = ipaddress.ip_address(m.get("right"))
            except ValueError as exc:
                raise LoadBalancerError(f"{where}: daddr {m.get('right')!r}: {exc}") from exc
        elif payload == {"protocol": "tcp", "field": "dport"} and isinstance(m.get("right"), int):
            port = m["right"]
    if vip is None or port is None or not expr or tail not in expr[-1]:
        raise LoadBalancerError(f"{where}: expected '{fam} daddr VIP tcp dport PORT {tail}'")
    if CONNECTION_ATTEMPT not in expr:  # e.g. an older pgvip's table: replaced on the next apply
        raise LoadBalancerError(f"{where}: the {tail} rule is not limited to a bare SYN")
    return vip, port


def _ct_original_daddr_is(expr: list[Json], vip: IPAddress) -> bool:
    for e in expr:
        m = e.get("match", {})
        ct = m.get("left", {}).get("ct") if isinstance(m.get("left"), dict) else None
        # nft 1.0.6 prints the key as "ip daddr"; the documented input form is key + family.
        if ct and ct.get("dir") == "original" and ct.get("key", "").endswith("daddr"):
            return bool(m.get("right") == str(vip))
    return False


def _dnat_slots(
    expr: list[Json], fam: str, vip: IPAddress, port: int, where: str
) -> list[tuple[IPAddress, int]]:
    rule_vip, rule_port = _vip_port(expr, fam, where, tail="dnat")
    if (rule_vip, rule_port) != (vip, port):
        raise LoadBalancerError(
            f"{where}: dnat rule is for {rule_vip}:{rule_port}, reject rule for {vip}:{port}"
        )
    try:
        mapping = expr[-1]["dnat"]["addr"]["map"]
        mod = mapping["key"]["numgen"]["mod"]
        elements = mapping["data"]["set"]
    except (KeyError, TypeError) as exc:
        raise LoadBalancerError(f"{where}: dnat is not 'numgen inc mod N map {{...}}'") from exc
    table: dict[int, tuple[IPAddress, int]] = {}
    for element in elements:
        try:
            index, target = element
            addr, target_port = target["concat"]
            table[int(index)] = (ipaddress.ip_address(addr), int(target_port))
        except (KeyError, TypeError, ValueError) as exc:
            raise LoadBalancerError(f"{where}: bad dnat map element {element!r}") from exc
    if sorted(table) != list(range(mod)):
        raise LoadBalancerError(f"{where}: dnat map keys are not 0..{mod - 1}")
    return [table[i] for i in range(mod)]


# -- forwarding sysctls ------------------------------------------------------------
def required_sysctls(interface: str | None = None, family: int = 4) -> dict[str, str]:
    """What a director needs in /proc/sys (see `loadbalancer.forwarding_sysctls`)."""
    return forwarding_sysctls(interface, family)


# -- the balancer ------------------------------------------------------------------
def find_nft() -> str | None:
    """The nft binary; also looked for in the sbin directories, which a service's or a
    user's PATH often lacks."""
    return shutil.which("nft") or shutil.which("nft", path="/usr/local/sbin:/usr/sbin:/sbin")


class NftablesLoadBalancer:
    """LoadBalancer over table ip/ip6 pgvip.

    `interface` is where the VIP lives (its send_redirects is turned off); `netns` runs every
    command through `ip netns exec`; `service` is accepted for the common constructor and
    unused (the table's name is its identity).

    With `manage_sysctls`, apply() enables forwarding and clear() restores each sysctl it
    changed, unless someone changed it again since: a node that is no longer the director
    should not stay a router by accident.
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
    ) -> None:
        self.interface = interface
        self.netns = netns
        self.nft = nft or find_nft() or "nft"
        self.manage_sysctls = manage_sysctls
        self.sysctls = SysctlKeeper(netns=netns, proc_root=proc_root)

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
        if current == want:
            return changed
        await self._nft(["-j", "-f", "-"], stdin=json.dumps(build_document(want)))
        return True

    async def actual(self) -> VirtualService | None:
        tables = json.loads(await self._nft(["-j", "list", "tables"]))
        families = [
            t["table"]["family"]
            for t in tables.get("nftables", [])
            if "table" in t
            and t["table"].get("name") == TABLE
            and t["table"].get("family") in ("ip", "ip6")
        ]
        if not families:
            return None
        if len(families) > 1:
            raise LoadBalancerError(f"more than one pgvip table ({', '.join(families)})")
        listing = await self._nft(["-j", "list", "table", families[0], TABLE])
        return parse_table(json.loads(listing))

    async def clear(self) -> None:
        await self._nft(["-j", "-f", "-"], stdin=json.dumps(build_document(None)))
        await self.sysctls.restore()

    async def _nft(self, args: list[str], stdin: str | None = None) -> str:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return await run_command([*prefix, self.nft, *args], stdin=stdin)
