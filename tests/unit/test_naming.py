"""Per-instance names of host-global state (pgvip.naming): today's names without a name, and
no two instances (named or not) ever sharing a table or a claim."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pgvip.config import ConfigError, load_config
from pgvip.dataplane.cleanup import instance_tables
from pgvip.naming import (
    DEFAULT_NAMES,
    StateNames,
    parse_sysctl_claim,
    table_instance,
    valid_name,
    vrid_claim,
)

GOOD = """
[patroni]
url = "http://127.0.0.1:8008"
[vrrp]
interface = "lo"
[rw]
vip = "10.20.30.50/24"
"""


def tables(names: StateNames) -> list[str]:
    return [names.balancer_table, names.masquerade_table, names.guard_table]


def test_an_unnamed_instance_keeps_the_tables_pgvip_always_used() -> None:
    assert tables(DEFAULT_NAMES) == ["pgvip", "pgvip_ipvs", "pgvip_guard"]
    assert DEFAULT_NAMES.label == "(unnamed)"


def test_a_name_suffixes_every_table() -> None:
    assert tables(StateNames("x")) == ["pgvip-x", "pgvip_ipvs-x", "pgvip_guard-x"]


@pytest.mark.parametrize("bad", ["", "X", "-x", "_x", "a b", "a/b", "a.b", "é", "a" * 25])
def test_bad_names_are_refused(bad: str) -> None:
    assert not valid_name(bad)
    with pytest.raises(ValueError, match="instance name"):
        StateNames(bad)


def test_no_two_instances_share_a_table_or_a_claim() -> None:
    # Names chosen to look like the other kinds of table: none may turn into another's.
    names = [None, "guard", "ipvs", "x", "x-guard", "guard-x", "ipvs_guard", "0", "a" * 24]
    seen: dict[str, str | None] = {}
    for name in names:
        for table in tables(StateNames(name)):
            assert table not in seen, (table, name, seen.get(table))
            seen[table] = name
    claims = [StateNames(n).instance_claim for n in names]
    assert len(set(claims)) == len(claims)
    for one, other in itertools.combinations(names, 2):
        assert StateNames(one).sysctl_claim("k", "0") != StateNames(other).sysctl_claim("k", "0")


def test_every_table_is_traced_back_to_its_instance() -> None:
    for name in (None, "x", "guard", "a-b_c"):
        for table in tables(StateNames(name)):
            assert table_instance(table) is not None
            assert table_instance(table)[1] == name  # type: ignore[index]
    for foreign in ("pgvipx", "pgvip_", "pgvip-", "pgvip-X", "filter", "pgvip_other", "nat"):
        assert table_instance(foreign) is None, foreign


def test_release_with_a_config_picks_only_that_instances_tables() -> None:
    listed = [
        ("ip", "pgvip"),
        ("ip", "pgvip-x"),
        ("inet", "pgvip_guard-x"),
        ("inet", "pgvip_guard-y"),
        ("inet", "pgvip_guard"),
        ("inet", "pgvip_ipvs-y"),
    ]
    assert instance_tables(listed, StateNames("x")) == [
        ("ip", "pgvip-x"),
        ("inet", "pgvip_guard-x"),
    ]
    assert instance_tables(listed, DEFAULT_NAMES) == [("ip", "pgvip"), ("inet", "pgvip_guard")]


def test_sysctl_claims_carry_the_value_from_before() -> None:
    for name in (None, "x"):
        claim = StateNames(name).sysctl_claim("net/ipv4/conf/eth0/send_redirects", "1")
        assert parse_sysctl_claim(claim) == (name, "net/ipv4/conf/eth0/send_redirects", "1")
    assert parse_sysctl_claim(vrid_claim("eth0", 4, 50)) is None
    assert parse_sysctl_claim("pgvip/sysctl/x") is None
    assert vrid_claim("eth0", 4, 50) != vrid_claim("eth0", 6, 50) != vrid_claim("eth1", 4, 50)


def test_the_config_key_is_checked_and_optional(tmp_path: Path) -> None:
    path = tmp_path / "pgvip.toml"
    path.write_text(GOOD)
    assert load_config(path, {}, {}).instance.name is None
    path.write_text('[instance]\nname = "x"\n' + GOOD)
    assert load_config(path, {}, {}).instance.name == "x"
    assert load_config(path, {"PGVIP_INSTANCE_NAME": "y"}, {}).instance.name == "y"
    path.write_text('[instance]\nname = "Cluster A"\n' + GOOD)
    with pytest.raises(ConfigError) as info:
        load_config(path, {}, {})
    assert "instance.name" in str(info.value) and "a-z" in str(info.value)


def test_the_dataplanes_use_the_instances_tables() -> None:
    import ipaddress

    from pgvip.dataplane.balancer import RealServer, VirtualService
    from pgvip.dataplane.balancer.ipvs import IpvsLoadBalancer
    from pgvip.dataplane.balancer.ipvs_masquerade import ruleset as masquerade
    from pgvip.dataplane.balancer.nft_ruleset import build_document
    from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer
    from pgvip.dataplane.stale_guard import ruleset as guard

    vip = ipaddress.ip_address("10.0.0.49")
    assert NftablesLoadBalancer(nft="nft", instance="x").table == "pgvip-x"
    assert NftablesLoadBalancer(nft="nft").table == "pgvip"
    assert IpvsLoadBalancer(nft="nft", instance="x").masquerade.table == "pgvip_ipvs-x"
    assert IpvsLoadBalancer(nft="nft").masquerade.table == "pgvip_ipvs"
    vs = VirtualService(vip, 5432, (RealServer(ipaddress.ip_address("10.0.0.2"), 5432, 1),))
    named = {
        c[verb].get(kind, {}).get("table") or c[verb].get(kind, {}).get("name")
        for c in build_document(vs, "pgvip-x")["nftables"]
        for verb in ("add", "delete")
        if verb in c
        for kind in ("table", "chain", "rule")
        if kind in c[verb]
    }
    assert named == {"pgvip-x"}
    assert "inet pgvip_ipvs-x" in masquerade(vip, 5432, "pgvip_ipvs-x")
    assert "pgvip_ipvs " not in masquerade(vip, 5432, "pgvip_ipvs-x")
    assert guard([vip], "pgvip_guard-x").count("inet pgvip_guard-x") == 3
