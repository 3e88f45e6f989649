"""The nftables RO balancer: golden documents, readback, normal form, sysctls, idempotence."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from pgvip.dataplane.balancer import LoadBalancer, LoadBalancerError, RealServer, VirtualService
from pgvip.dataplane.balancer.nft_readback import parse_table
from pgvip.dataplane.balancer.nft_ruleset import (
    CONNECTION_ATTEMPT,
    MAX_SLOTS,
    build_document,
    check,
    normalise,
    slots,
)
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer, required_sysctls
from pgvip.dataplane.sysctl import apply_sysctls

A = ip_address
VIP = A("10.20.30.49")


def rs(host: str, weight: int = 1, port: int = 5432) -> RealServer:
    return RealServer(A(host), port, weight)


WRR = VirtualService(
    VIP,
    5432,
    (rs("10.20.30.52", 2), rs("10.20.30.53", 1, port=5433), rs("10.20.30.51", 0)),
    scheduler="wrr",
)

CLEAR = """
{"metainfo": {"json_schema_version": 1}},
{"add": {"table": {"family": "ip", "name": "pgvip"}}},
{"delete": {"table": {"family": "ip", "name": "pgvip"}}},
{"add": {"table": {"family": "ip6", "name": "pgvip"}}},
{"delete": {"table": {"family": "ip6", "name": "pgvip"}}}
"""

GOLDEN_WRR = (
    CLEAR
    + """,
{"add": {"table": {"family": "ip", "name": "pgvip"}}},
{"add": {"chain": {"family": "ip", "table": "pgvip", "name": "prerouting", "type": "nat",
  "hook": "prerouting", "prio": -100, "policy": "accept"}}},
{"add": {"chain": {"family": "ip", "table": "pgvip", "name": "output", "type": "nat",
  "hook": "output", "prio": -100, "policy": "accept"}}},
{"add": {"chain": {"family": "ip", "table": "pgvip", "name": "postrouting", "type": "nat",
  "hook": "postrouting", "prio": 100, "policy": "accept"}}},
{"add": {"chain": {"family": "ip", "table": "pgvip", "name": "input", "type": "filter",
  "hook": "input", "prio": 0, "policy": "accept"}}},
{"add": {"rule": {"family": "ip", "table": "pgvip", "chain": "prerouting", "expr": [
  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
   "right": 5432}},
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
   ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
  {"dnat": {"family": "ip", "addr": {"map": {
    "key": {"numgen": {"mode": "inc", "mod": 3, "offset": 0}},
    "data": {"set": [[0, {"concat": ["10.20.30.52", 5432]}],
                     [1, {"concat": ["10.20.30.53", 5433]}],
                     [2, {"concat": ["10.20.30.52", 5432]}]]}}}}}]}}},
{"add": {"rule": {"family": "ip", "table": "pgvip", "chain": "output", "expr": [
  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
   "right": 5432}},
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
   ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
  {"dnat": {"family": "ip", "addr": {"map": {
    "key": {"numgen": {"mode": "inc", "mod": 3, "offset": 0}},
    "data": {"set": [[0, {"concat": ["10.20.30.52", 5432]}],
                     [1, {"concat": ["10.20.30.53", 5433]}],
                     [2, {"concat": ["10.20.30.52", 5432]}]]}}}}}]}}},
{"add": {"rule": {"family": "ip", "table": "pgvip", "chain": "postrouting", "expr": [
  {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
  {"match": {"op": "==", "left": {"ct": {"key": "daddr", "family": "ip", "dir": "original"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
  {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}},
   "right": 5432}},
  {"masquerade": null}]}}},
{"add": {"rule": {"family": "ip", "table": "pgvip", "chain": "input",
  "comment": "pgvip scheduler=wrr", "expr": [
  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
   "right": 5432}},
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
   ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
  {"reject": {"type": "tcp reset"}}]}}}
"""
)

# What `nft -j list table ip pgvip` printed (nft 1.0.6) after loading GOLDEN_WRR.
LISTING = """
{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "pgvip", "handle": 16}},
{"chain": {"family": "ip", "table": "pgvip", "name": "prerouting", "handle": 1, "type": "nat",
  "hook": "prerouting", "prio": -100, "policy": "accept"}},
{"chain": {"family": "ip", "table": "pgvip", "name": "output", "handle": 2, "type": "nat",
  "hook": "output", "prio": -100, "policy": "accept"}},
{"chain": {"family": "ip", "table": "pgvip", "name": "postrouting", "handle": 3, "type": "nat",
  "hook": "postrouting", "prio": 100, "policy": "accept"}},
{"chain": {"family": "ip", "table": "pgvip", "name": "input", "handle": 4, "type": "filter",
  "hook": "input", "prio": 0, "policy": "accept"}},
{"rule": {"family": "ip", "table": "pgvip", "chain": "prerouting", "handle": 6, "expr": [
  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
   "right": 5432}},
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
   ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
  {"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "inc", "mod": 3,
   "offset": 0}}, "data": {"set": [[0, {"concat": ["10.20.30.52", 5432]}],
   [1, {"concat": ["10.20.30.53", 5433]}], [2, {"concat": ["10.20.30.52", 5432]}]]}}}}}]}},
{"rule": {"family": "ip", "table": "pgvip", "chain": "output", "handle": 8, "expr": [
  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
   "right": 5432}},
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
   ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
  {"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "inc", "mod": 3,
   "offset": 0}}, "data": {"set": [[0, {"concat": ["10.20.30.52", 5432]}],
   [1, {"concat": ["10.20.30.53", 5433]}], [2, {"concat": ["10.20.30.52", 5432]}]]}}}}}]}},
{"rule": {"family": "ip", "table": "pgvip", "chain": "postrouting", "handle": 9, "expr": [
  {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
  {"match": {"op": "==", "left": {"ct": {"key": "daddr", "dir": "original"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
  {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}},
   "right": 5432}},
  {"masquerade": null}]}},
{"rule": {"family": "ip", "table": "pgvip", "chain": "input", "handle": 10,
  "comment": "pgvip scheduler=wrr", "expr": [
  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
   "right": "10.20.30.49"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
   "right": 5432}},
  {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
   ["fin", "syn", "rst", "ack"]]}, "right": "syn"}},
  {"reject": {"type": "tcp reset"}}]}}
"""


def doc(body: str) -> dict[str, Any]:
    return {"nftables": json.loads(f"[{body}]")}


def test_golden_wrr_document() -> None:
    assert build_document(WRR) == doc(GOLDEN_WRR)


def test_golden_clear_document() -> None:
    assert build_document(None) == doc(CLEAR)


def test_ipv6_document_uses_the_ip6_family_everywhere() -> None:
    vs = VirtualService(A("fd00::49"), 5432, (rs("fd00::2"), rs("fd00::3")))
    commands = build_document(vs)["nftables"]
    assert commands[5] == {"add": {"table": {"family": "ip6", "name": "pgvip"}}}
    rules = [c["add"]["rule"] for c in commands if "rule" in c.get("add", {})]
    assert {r["family"] for r in rules} == {"ip6"}
    pre = rules[0]["expr"]
    assert pre[0]["match"]["left"] == {"payload": {"protocol": "ip6", "field": "daddr"}}
    assert pre[-1]["dnat"]["family"] == "ip6"
    assert pre[-1]["dnat"]["addr"]["map"]["data"]["set"] == [
        [0, {"concat": ["fd00::2", 5432]}],
        [1, {"concat": ["fd00::3", 5432]}],
    ]
    masq = rules[2]["expr"][1]["match"]["left"]
    assert masq == {"ct": {"key": "daddr", "family": "ip6", "dir": "original"}}


def test_no_backend_keeps_reject_and_masquerade_but_no_dnat() -> None:
    vs = VirtualService(VIP, 5432, (rs("10.20.30.52", 0),))
    rules = [c["add"]["rule"] for c in build_document(vs)["nftables"] if "rule" in c.get("add", {})]
    assert [r["chain"] for r in rules] == ["postrouting", "input"]


def test_readback_of_real_nft_output() -> None:
    assert parse_table(doc(LISTING)) == normalise(WRR)
    assert parse_table(doc(LISTING)) == VirtualService(
        VIP, 5432, (rs("10.20.30.52", 2), rs("10.20.30.53", 1, port=5433)), scheduler="wrr"
    )


def as_listing(document: dict[str, Any]) -> dict[str, Any]:
    """What nft would list after loading `document` (the adds that survive, unwrapped)."""
    items: list[dict[str, Any]] = []
    for command in document["nftables"]:
        (verb, body), *_ = command.items()
        if verb == "add":
            items.append(copy.deepcopy(body))
        elif verb == "delete":
            fam = body["table"]["family"]
            items = [i for i in items if next(iter(i.values())).get("family") != fam]
    return {"nftables": items}


@pytest.mark.parametrize(
    "vs",
    [
        WRR,
        VirtualService(VIP, 5432, (rs("10.0.0.1", 5), rs("10.0.0.2", 3)), scheduler="rr"),
        VirtualService(VIP, 6432, (), scheduler="wrr"),
        VirtualService(A("fd00::49"), 5432, (rs("fd00::2", 4), rs("fd00::3", 2)), scheduler="wrr"),
    ],
)
def test_document_and_readback_round_trip(vs: VirtualService) -> None:
    assert parse_table(as_listing(build_document(vs))) == normalise(vs)


def test_readback_without_table_is_none() -> None:
    assert parse_table(as_listing(build_document(None))) is None
    other = {"nftables": [{"table": {"family": "inet", "name": "filter"}}]}
    assert parse_table(other) is None


def _damaged(edit: str) -> dict[str, Any]:
    listing = doc(LISTING)
    items = listing["nftables"]
    if edit == "drop output chain":
        items[:] = [i for i in items if i.get("chain", {}).get("name") != "output"]
    elif edit == "drop masquerade":
        items[:] = [i for i in items if i.get("rule", {}).get("chain") != "postrouting"]
    elif edit == "output differs":
        rule = next(i["rule"] for i in items if i.get("rule", {}).get("chain") == "output")
        rule["expr"][-1]["dnat"]["addr"]["map"]["data"]["set"][2][1]["concat"][0] = "10.9.9.9"
    elif edit == "extra rule":
        rule = next(i for i in items if i.get("rule", {}).get("chain") == "prerouting")
        items.append(copy.deepcopy(rule))
    elif edit == "hole in map":
        for i in items:
            if i.get("rule", {}).get("chain") in ("prerouting", "output"):
                i["rule"]["expr"][-1]["dnat"]["addr"]["map"]["data"]["set"].pop(1)
    elif edit == "foreign chain":
        items.append({"chain": {"family": "ip", "table": "pgvip", "name": "mine"}})
    elif edit in ("guard for every packet", "dnat for every packet"):  # pgvip before 0.1.1
        chain = "input" if edit.startswith("guard") else "output"
        rule = next(i["rule"] for i in items if i.get("rule", {}).get("chain") == chain)
        rule["expr"] = [e for e in rule["expr"] if e != CONNECTION_ATTEMPT]
    elif edit == "wrong hook":
        chain = next(i["chain"] for i in items if i.get("chain", {}).get("name") == "input")
        chain["hook"] = "forward"
    return listing


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("drop output chain", "chain output is missing"),
        ("drop masquerade", "expected 1 rule in postrouting, found 0"),
        ("output differs", "prerouting and output dnat maps differ"),
        ("extra rule", "expected one dnat rule in both prerouting and output, found 2 and 1"),
        ("hole in map", "dnat map keys are not 0..2"),
        ("foreign chain", "unexpected chain(s) mine"),
        ("wrong hook", "chain input is filter/forward/0, expected filter/input/0"),
        ("guard for every packet", "the reject rule is not limited to a bare SYN"),
        ("dnat for every packet", "the dnat rule is not limited to a bare SYN"),
    ],
)
def test_readback_rejects_a_table_that_is_not_ours(edit: str, message: str) -> None:
    with pytest.raises(LoadBalancerError) as info:
        parse_table(_damaged(edit))
    assert "table ip pgvip is not pgvip's shape" in str(info.value)
    assert message in str(info.value)


def test_normal_form() -> None:
    vs = VirtualService(VIP, 5432, (rs("10.0.0.1", 4), rs("10.0.0.2", 6), rs("10.0.0.3", 0)))
    assert [r.weight for r in normalise(vs).backends] == [1, 1]
    wrr = VirtualService(VIP, 5432, vs.backends, scheduler="wrr")
    assert [(str(r.address), r.weight) for r in normalise(wrr).backends] == [
        ("10.0.0.1", 2),
        ("10.0.0.2", 3),
    ]
    heavy = VirtualService(
        VIP, 5432, (rs("10.0.0.1", MAX_SLOTS), rs("10.0.0.2", 1)), scheduler="wrr"
    )
    with pytest.raises(LoadBalancerError, match=f"need {MAX_SLOTS + 1} numgen slots"):
        normalise(heavy)


def test_slots_are_spread_out() -> None:
    order = slots([rs("10.0.0.1", 5), rs("10.0.0.2", 1), rs("10.0.0.3", 1)])
    assert [str(r.address)[-1] for r in order] == ["1", "1", "2", "1", "3", "1", "1"]
    assert slots([]) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lc", "nat", 0), "scheduler 'lc' needs IPVS; the nftables dataplane supports rr and wrr"),
        (("rr", "dr", 0), "forwarding 'dr' needs IPVS; the nftables dataplane supports nat only"),
        (("rr", "nat", 300), "persistence_timeout needs IPVS"),
        (("roundrobin", "nat", 0), "unknown scheduler 'roundrobin'"),
        (("rr", "masq", 0), "unknown forwarding method 'masq'"),
    ],
)
def test_check_rejects_what_nftables_cannot_do(args: tuple[str, str, int], message: str) -> None:
    with pytest.raises(LoadBalancerError, match=message):
        check(*args)
    with pytest.raises(LoadBalancerError, match=message):
        NftablesLoadBalancer.check(*args)


def test_required_sysctls() -> None:
    assert required_sysctls() == {
        "net/ipv4/ip_forward": "1",
        "net/ipv4/conf/all/send_redirects": "0",
    }
    assert required_sysctls("eth0")["net/ipv4/conf/eth0/send_redirects"] == "0"
    assert required_sysctls("eth0", family=6) == {"net/ipv6/conf/all/forwarding": "1"}
    with pytest.raises(LoadBalancerError, match="bad interface name"):
        required_sysctls("../../kernel")


def fake_proc(tmp_path: Path, values: dict[str, str]) -> Path:
    for key, value in values.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(f"{value}\n")
    return tmp_path


async def test_apply_sysctls_changes_only_what_differs(tmp_path: Path) -> None:
    root = fake_proc(
        tmp_path,
        {
            "net/ipv4/ip_forward": "0",
            "net/ipv4/conf/all/send_redirects": "0",
            "net/ipv4/conf/eth0/send_redirects": "1",
        },
    )
    changed = await apply_sysctls(required_sysctls("eth0"), proc_root=root)
    assert changed == {"net/ipv4/ip_forward": "0", "net/ipv4/conf/eth0/send_redirects": "1"}
    assert (root / "net/ipv4/ip_forward").read_text() == "1\n"
    assert (root / "net/ipv4/conf/eth0/send_redirects").read_text() == "0\n"
    assert await apply_sysctls(required_sysctls("eth0"), proc_root=root) == {}


async def test_apply_sysctls_names_a_missing_interface(tmp_path: Path) -> None:
    root = fake_proc(tmp_path, {"net/ipv4/ip_forward": "1"})
    with pytest.raises(LoadBalancerError, match="cannot read sysctl net/ipv4/conf/all"):
        await apply_sysctls(required_sysctls("eth9"), proc_root=root)


class FakeNft(NftablesLoadBalancer):
    """Keeps the 'kernel' table in memory: loads documents, lists what they left."""

    def __init__(self, proc_root: Path) -> None:
        super().__init__(interface="eth0", proc_root=proc_root)
        self.listing: dict[str, Any] = {"nftables": []}
        self.loads = 0

    async def _nft(self, args: list[str], stdin: str | None = None) -> str:
        if args == ["-j", "-f", "-"]:
            assert stdin is not None
            kept = [{"add": item} for item in self.listing["nftables"]]
            self.listing = as_listing({"nftables": kept + json.loads(stdin)["nftables"]})
            self.loads += 1
            return ""
        if args == ["-j", "list", "tables"]:
            tables = [i for i in self.listing["nftables"] if "table" in i]
            return json.dumps({"nftables": tables})
        if args[:3] == ["-j", "list", "table"]:
            return json.dumps(self.listing)
        raise AssertionError(f"unexpected nft {args}")


async def test_apply_is_idempotent_and_clear_restores_sysctls(tmp_path: Path) -> None:
    root = fake_proc(
        tmp_path,
        {
            "net/ipv4/ip_forward": "0",
            "net/ipv4/conf/all/send_redirects": "1",
            "net/ipv4/conf/eth0/send_redirects": "1",
        },
    )
    lb = FakeNft(root)
    assert isinstance(lb, LoadBalancer)
    assert await lb.actual() is None
    assert await lb.apply(WRR) is True
    assert (root / "net/ipv4/ip_forward").read_text() == "1\n"
    assert await lb.actual() == normalise(WRR)
    assert await lb.apply(WRR) is False
    assert lb.loads == 1
    smaller = VirtualService(VIP, 5432, (rs("10.20.30.52", 2),), scheduler="wrr")
    assert await lb.apply(smaller) is True
    assert await lb.actual() == normalise(smaller)
    # Someone else turns send_redirects on for eth0 again: clear() must leave it alone.
    (root / "net/ipv4/conf/eth0/send_redirects").write_text("1\n")
    await lb.clear()
    assert await lb.actual() is None
    assert (root / "net/ipv4/ip_forward").read_text() == "0\n"
    assert (root / "net/ipv4/conf/all/send_redirects").read_text() == "1\n"
    await lb.clear()  # idempotent


async def test_apply_replaces_a_damaged_table(tmp_path: Path) -> None:
    lb = FakeNft(fake_proc(tmp_path, required_sysctls("eth0")))
    lb.listing = _damaged("drop masquerade")
    with pytest.raises(LoadBalancerError, match="postrouting"):
        await lb.actual()
    assert await lb.apply(WRR) is True
    assert await lb.actual() == normalise(WRR)


async def test_nft_failure_carries_stderr(tmp_path: Path) -> None:
    script = tmp_path / "nft"
    script.write_text(
        "#!/bin/sh\necho 'Error: Could not process rule: Operation not permitted' >&2\nexit 1\n"
    )
    script.chmod(0o755)
    lb = NftablesLoadBalancer(nft=str(script), manage_sysctls=False)
    with pytest.raises(LoadBalancerError, match="Operation not permitted"):
        await lb.actual()


async def test_missing_nft_names_the_package() -> None:
    lb = NftablesLoadBalancer(nft="/nonexistent/nft", manage_sysctls=False)
    with pytest.raises(LoadBalancerError, match="install the 'nftables' package"):
        await lb.clear()


def _throwaway_netns_prefix() -> list[str] | None:
    """A command prefix that runs in a private, self-deleting network namespace."""
    unshare = shutil.which("unshare")
    if unshare is None or shutil.which("nft") is None:
        return None
    prefix = (
        [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user", "--net"]
    )
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


NETNS_PREFIX = _throwaway_netns_prefix()


@pytest.mark.skipif(NETNS_PREFIX is None, reason="needs nft and unshare with a private netns")
@pytest.mark.parametrize(
    "vs",
    [
        WRR,
        VirtualService(A("fd00::49"), 5432, (rs("fd00::2"), rs("fd00::3", 3)), scheduler="wrr"),
        VirtualService(VIP, 5432, ()),
        None,
    ],
)
def test_nft_check_accepts_the_document(vs: VirtualService | None) -> None:
    assert NETNS_PREFIX is not None
    result = subprocess.run(
        [*NETNS_PREFIX, "nft", "-j", "--check", "-f", "-"],
        input=json.dumps(build_document(vs)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(NETNS_PREFIX is None, reason="needs nft and unshare with a private netns")
def test_nft_check_rejects_a_broken_document() -> None:
    assert NETNS_PREFIX is not None
    broken = build_document(WRR)
    broken["nftables"][-1]["add"]["rule"]["chain"] = "forward"  # no such chain
    result = subprocess.run(
        [*NETNS_PREFIX, "nft", "-j", "--check", "-f", "-"],
        input=json.dumps(broken),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "No such file or directory" in result.stderr
