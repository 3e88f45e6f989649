"""Reading `nft -j list table` back into the VirtualService it holds (pure), so drift is seen."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pgvip.dataplane.balancer import IPAddress, LoadBalancerError, RealServer, VirtualService
from pgvip.dataplane.balancer.nft_ruleset import (
    CHAINS,
    COMMENT_PREFIX,
    CONNECTION_ATTEMPT,
    TABLE,
    Json,
)


def parse_table(listing: Mapping[str, Any], table: str = TABLE) -> VirtualService | None:
    """Turn `nft -j list table <fam> pgvip` (or `list ruleset`) into the VirtualService it holds.

    None if there is no pgvip table. A pgvip table that is not in the shape `build_document`
    writes (hand-edited, half-deleted) raises LoadBalancerError saying what is off.
    """
    items = listing.get("nftables")
    if not isinstance(items, list):
        raise LoadBalancerError("nft -j output has no 'nftables' list")
    tables = [i["table"] for i in items if "table" in i and i["table"].get("name") == table]
    if not tables:
        return None
    if len(tables) > 1:
        fams = ", ".join(str(t.get("family")) for t in tables)
        raise LoadBalancerError(f"more than one pgvip table ({fams}); apply or clear replaces them")
    fam = tables[0].get("family")
    if fam not in ("ip", "ip6"):
        raise LoadBalancerError(f"table {fam} {table} is not an ip/ip6 table")
    where = f"table {fam} {table} is not pgvip's shape"

    chains = {
        c["chain"]["name"]: c["chain"]
        for c in items
        if "chain" in c and c["chain"].get("table") == table and c["chain"].get("family") == fam
    }
    rules: dict[str, list[list[Json]]] = {}
    comments: dict[str, str | None] = {}
    for r in items:
        rule = r.get("rule")
        if rule and rule.get("table") == table and rule.get("family") == fam:
            rules.setdefault(rule["chain"], []).append(rule.get("expr", []))
            comments[rule["chain"]] = rule.get("comment")
    for name, kind, hook, prio in CHAINS:
        c = chains.get(name)
        if c is None:
            raise LoadBalancerError(f"{where}: chain {name} is missing")
        if (c.get("type"), c.get("hook"), c.get("prio")) != (kind, hook, prio):
            raise LoadBalancerError(
                f"{where}: chain {name} is {c.get('type')}/{c.get('hook')}/{c.get('prio')}, "
                f"expected {kind}/{hook}/{prio}"
            )
    extra = set(chains) - {name for name, *_ in CHAINS}
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
