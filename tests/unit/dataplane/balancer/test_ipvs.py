"""IPVS: the minimal-diff planner (golden), dump parsing, request encoding, and the executor
against an in-memory stand-in that follows the kernel's genetlink rules (this kernel has no IPVS).
"""

from __future__ import annotations

import errno
import socket
import struct
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.ipvs import ipvsmsg

from pgvip.dataplane.balancer import LoadBalancer, LoadBalancerError, RealServer, VirtualService
from pgvip.dataplane.balancer import ipvs as ipvs_mod
from pgvip.dataplane.balancer.choice import ipvs_available
from pgvip.dataplane.balancer.ipvs import (
    IpvsLoadBalancer,
    dest_request,
    execute,
    service_request,
)
from pgvip.dataplane.balancer.ipvs_plan import (
    AddDest,
    AddService,
    DelDest,
    DelService,
    Dest,
    EditDest,
    EditService,
    Service,
    parse_dest,
    parse_service,
    plan,
    to_virtual_service,
)
from pgvip.dataplane.balancer.realserver import real_server_sysctls

A = ip_address
VIP = A("10.20.30.49")
B1, B2, B3 = A("10.20.30.51"), A("10.20.30.52"), A("10.20.30.53")


def vs(*backends: tuple[Any, int], **kw: Any) -> VirtualService:
    return VirtualService(VIP, 5432, tuple(RealServer(a, 5432, w) for a, w in backends), **kw)


SVC = Service(VIP, 5432, "tcp", "wrr", 0)


def d(addr: Any, weight: int = 1, forwarding: str = "dr") -> Dest:
    return Dest(addr, 5432, weight, forwarding)


# -- plan: golden ------------------------------------------------------------------
def test_plan_add_from_nothing() -> None:
    desired = vs((B1, 1), (B2, 2), scheduler="wrr", forwarding="dr")
    assert plan(None, desired) == [AddService(SVC), AddDest(SVC, d(B1, 1)), AddDest(SVC, d(B2, 2))]


def test_plan_nothing_changed_is_empty() -> None:
    state = vs((B1, 1), (B2, 2), scheduler="wrr", forwarding="dr")
    assert plan(state, state) == []
    assert plan(None, None) == []


def test_plan_weight_change_is_one_dest_edit() -> None:
    before = vs((B1, 1), (B2, 2), scheduler="wrr", forwarding="dr")
    after = vs((B1, 1), (B2, 0), scheduler="wrr", forwarding="dr")
    assert plan(before, after) == [EditDest(SVC, d(B2, 0))]


def test_plan_scheduler_change_is_a_service_edit() -> None:
    before = vs((B1, 1), scheduler="rr", forwarding="dr")
    after = vs((B1, 1), scheduler="wrr", forwarding="dr")
    assert plan(before, after) == [EditService(SVC)]


def test_plan_persistence_change_is_a_service_edit() -> None:
    before = vs((B1, 1), scheduler="wrr", forwarding="dr")
    after = vs((B1, 1), scheduler="wrr", forwarding="dr", persistence_timeout=300)
    assert plan(before, after) == [EditService(Service(VIP, 5432, "tcp", "wrr", 300))]


def test_plan_removed_dest_is_a_del() -> None:
    before = vs((B1, 1), (B2, 1), scheduler="wrr", forwarding="dr")
    after = vs((B1, 1), scheduler="wrr", forwarding="dr")
    assert plan(before, after) == [DelDest(SVC, d(B2, 1))]


def test_plan_orders_adds_before_edits_before_dels() -> None:
    before = vs((B1, 1), (B2, 1), scheduler="rr", forwarding="dr")
    after = vs((B2, 3), (B3, 1), scheduler="wrr", forwarding="dr")
    assert plan(before, after) == [
        EditService(SVC),
        AddDest(SVC, d(B3, 1)),
        EditDest(SVC, d(B2, 3)),
        DelDest(SVC, d(B1, 1)),
    ]


def test_plan_forwarding_change_edits_every_dest() -> None:
    before = vs((B1, 1), (B2, 1), scheduler="wrr", forwarding="nat")
    after = vs((B1, 1), (B2, 1), scheduler="wrr", forwarding="dr")
    assert plan(before, after) == [EditDest(SVC, d(B1)), EditDest(SVC, d(B2))]


def test_plan_removing_the_service() -> None:
    before = vs((B1, 1), scheduler="wrr", forwarding="dr")
    assert plan(before, None) == [DelService(SVC)]


def test_plan_new_key_builds_the_new_service_before_deleting_the_old() -> None:
    before = vs((B1, 1), scheduler="wrr", forwarding="dr")
    after = VirtualService(
        A("10.20.30.48"), 5432, (RealServer(B1, 5432, 1),), scheduler="wrr", forwarding="dr"
    )
    new = Service(A("10.20.30.48"), 5432, "tcp", "wrr", 0)
    assert plan(before, after) == [AddService(new), AddDest(new, d(B1)), DelService(SVC)]


# -- dump parsing (real pyroute2 encode/decode) ------------------------------------------
def decoded(cmd_attr: str, attrs: list[tuple[str, Any]]) -> ipvsmsg:
    msg = ipvsmsg()
    msg["cmd"] = 4
    msg["version"] = 1
    msg["attrs"] = [(cmd_attr, {"attrs": attrs})]
    msg.encode()
    out = ipvsmsg(msg.data)
    out.decode()
    return out


def service_msg(
    addr: str, port: int, sched: str, flags: int, timeout: int, **extra: Any
) -> ipvsmsg:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    attrs: list[tuple[str, Any]] = [
        ("IPVS_SVC_ATTR_AF", family),
        ("IPVS_SVC_ATTR_PROTOCOL", extra.get("protocol", socket.IPPROTO_TCP)),
        ("IPVS_SVC_ATTR_ADDR", addr),
        ("IPVS_SVC_ATTR_PORT", port),
        ("IPVS_SVC_ATTR_SCHED_NAME", sched),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", timeout),
    ]
    if "fwmark" in extra:
        attrs.append(("IPVS_SVC_ATTR_FWMARK", extra["fwmark"]))
    return decoded("IPVS_CMD_ATTR_SERVICE", attrs)


def dest_msg(addr: str, port: int, weight: int, method: int) -> ipvsmsg:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return decoded(
        "IPVS_CMD_ATTR_DEST",
        [
            ("IPVS_DEST_ATTR_ADDR_FAMILY", family),
            ("IPVS_DEST_ATTR_ADDR", addr),
            ("IPVS_DEST_ATTR_PORT", port),
            ("IPVS_DEST_ATTR_FWD_METHOD", method),
            ("IPVS_DEST_ATTR_WEIGHT", weight),
        ],
    )


def test_parse_service_reads_persistence_from_the_attributes() -> None:
    # 0x3 = persistent | hashed (the kernel's own bit)
    msg = service_msg("10.20.30.49", 5432, "wrr", 0x3, 300)
    assert parse_service(msg) == Service(VIP, 5432, "tcp", "wrr", 300)
    not_persistent = service_msg("10.20.30.49", 5432, "rr", 0x2, 300)
    assert parse_service(not_persistent) == Service(VIP, 5432, "tcp", "rr", 0)
    v6 = service_msg("fd00::49", 6432, "mh", 0x2, 0)
    assert parse_service(v6) == Service(A("fd00::49"), 6432, "tcp", "mh", 0)


def test_parse_service_skips_services_pgvip_never_makes() -> None:
    assert parse_service(service_msg("10.20.30.49", 53, "rr", 0, 0, protocol=17)) is None
    assert parse_service(service_msg("0.0.0.0", 0, "rr", 0, 0, fwmark=7)) is None
    assert parse_service(service_msg("10.20.30.49", 5432, "dh", 0, 0)) is None


def test_parse_dest_reads_method_and_weight_from_the_attributes() -> None:
    assert parse_dest(dest_msg("10.20.30.51", 5432, 0, 0)) == Dest(B1, 5432, 0, "nat")
    assert parse_dest(dest_msg("10.20.30.52", 5433, 7, 2)) == Dest(B2, 5433, 7, "tun")
    # Other connection flags share the word with the method.
    assert parse_dest(dest_msg("fd00::2", 5432, 1, 0x100 | 3)) == Dest(A("fd00::2"), 5432, 1, "dr")
    with pytest.raises(LoadBalancerError, match="unknown forwarding method 1"):
        parse_dest(dest_msg("10.20.30.51", 5432, 1, 1))


def test_to_virtual_service() -> None:
    got = to_virtual_service(SVC, [d(B2, 2), d(B1, 0)], "nat")
    assert got == vs((B1, 0), (B2, 2), scheduler="wrr", forwarding="dr")
    empty = to_virtual_service(SVC, [], "tun")
    assert empty.forwarding == "tun" and empty.backends == ()
    with pytest.raises(LoadBalancerError, match="mixes forwarding methods dr, nat"):
        to_virtual_service(SVC, [d(B1), d(B2, forwarding="nat")], "nat")


# -- requests -------------------------------------------------------------------------------
def attrs_of(request: Any) -> dict[str, Any]:
    return dict(request.dump_nla()["attrs"])


def test_service_request_carries_a_full_entry() -> None:
    attrs = attrs_of(service_request(Service(VIP, 5432, "tcp", "wlc", 300)))
    assert attrs["IPVS_SVC_ATTR_ADDR"] == "10.20.30.49"
    assert attrs["IPVS_SVC_ATTR_PORT"] == 5432
    assert attrs["IPVS_SVC_ATTR_PROTOCOL"] == socket.IPPROTO_TCP
    assert attrs["IPVS_SVC_ATTR_SCHED_NAME"] == "wlc"
    assert attrs["IPVS_SVC_ATTR_TIMEOUT"] == 300
    assert attrs["IPVS_SVC_ATTR_FLAGS"] == {"flags": 1, "mask": 1}
    assert attrs["IPVS_SVC_ATTR_NETMASK"] == "255.255.255.255"
    plain = attrs_of(service_request(Service(VIP, 5432)))
    assert plain["IPVS_SVC_ATTR_FLAGS"] == {"flags": 0, "mask": 1}


def test_ipv6_service_request_sends_prefix_length_128_as_netmask() -> None:
    attrs = attrs_of(service_request(Service(A("fd00::49"), 5432)))
    assert attrs["IPVS_SVC_ATTR_AF"] == socket.AF_INET6
    # The kernel reads this attribute as a host-order u32 prefix length.
    assert struct.unpack("=I", socket.inet_aton(attrs["IPVS_SVC_ATTR_NETMASK"]))[0] == 128


@pytest.mark.parametrize(("forwarding", "code"), [("nat", 0), ("tun", 2), ("dr", 3)])
def test_dest_request_codes(forwarding: str, code: int) -> None:
    attrs = attrs_of(dest_request(Dest(B1, 5432, 4, forwarding)))
    assert attrs["IPVS_DEST_ATTR_FWD_METHOD"] == code
    assert attrs["IPVS_DEST_ATTR_WEIGHT"] == 4
    assert attrs["IPVS_DEST_ATTR_ADDR"] == "10.20.30.51"
    assert {"IPVS_DEST_ATTR_U_THRESH", "IPVS_DEST_ATTR_L_THRESH"} <= set(attrs)


# -- executor against a kernel stand-in ------------------------------------------------------
class FakeIPVS:
    """The IPVS genetlink rules that matter here, in memory (NLA names as on the wire)."""

    HASHED = 0x2

    def __init__(self) -> None:
        self.services: dict[tuple[str, int], dict[str, Any]] = {}
        self.dests: dict[tuple[str, int], dict[tuple[str, int], dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.closed = 0

    def close(self) -> None:
        self.closed += 1

    @staticmethod
    def _key(attrs: dict[str, Any], prefix: str) -> tuple[str, int]:
        return (attrs[f"{prefix}ADDR"], attrs[f"{prefix}PORT"])

    async def service(self, command: str, service: Any = None) -> list[Any]:
        if command == "update":
            raise AssertionError("pyroute2's 'update' sends a delete")
        if command == "dump":
            return [
                service_msg(a, p, s["sched"], s["flags"], s["timeout"])
                for (a, p), s in self.services.items()
            ]
        self.calls.append(("service", command))
        attrs = attrs_of(service)
        key = self._key(attrs, "IPVS_SVC_ATTR_")
        if command in ("add", "set"):
            full = ("SCHED_NAME", "FLAGS", "TIMEOUT", "NETMASK")
            if not all(f"IPVS_SVC_ATTR_{f}" in attrs for f in full):
                raise NetlinkError(errno.EINVAL, "not a full service entry")
            if (command == "add") == (key in self.services):
                raise NetlinkError(errno.EEXIST if command == "add" else errno.ESRCH)
            old = self.services.get(key, {"flags": 0})
            flags = attrs["IPVS_SVC_ATTR_FLAGS"]
            merged = (old["flags"] & ~flags["mask"]) | (flags["flags"] & flags["mask"])
            self.services[key] = {
                "sched": attrs["IPVS_SVC_ATTR_SCHED_NAME"],
                "timeout": attrs["IPVS_SVC_ATTR_TIMEOUT"],
                "flags": merged | self.HASHED,
            }
            self.dests.setdefault(key, {})
        elif command == "del":
            if key not in self.services:
                raise NetlinkError(errno.ESRCH)
            del self.services[key]
            del self.dests[key]
        return []

    async def dest(self, command: str, service: Any, dest: Any = None) -> list[Any]:
        if command == "update":
            raise AssertionError("pyroute2's 'update' sends a delete")
        skey = self._key(dict(service.dump_key()["attrs"]), "IPVS_SVC_ATTR_")
        if skey not in self.services:
            raise NetlinkError(errno.ESRCH)
        table = self.dests[skey]
        if command == "dump":
            return [dest_msg(a, p, v["weight"], v["method"]) for (a, p), v in table.items()]
        self.calls.append(("dest", command))
        attrs = attrs_of(dest)
        key = self._key(attrs, "IPVS_DEST_ATTR_")
        if command in ("add", "set"):
            if (command == "add") == (key in table):
                raise NetlinkError(errno.EEXIST if command == "add" else errno.ENOENT)
            table[key] = {
                "weight": attrs["IPVS_DEST_ATTR_WEIGHT"],
                "method": attrs["IPVS_DEST_ATTR_FWD_METHOD"],
            }
        elif command == "del":
            if key not in table:
                raise NetlinkError(errno.ENOENT)
            del table[key]
        return []


class FakeMasquerade:
    """The one-armed NAT table, without nft (tests/integration/dataplane_ro runs the real one)."""

    tables: list[set[tuple[object, int]] | None] = []

    def __init__(self, nft: str | None, *, netns: str | None = None, table: str = "") -> None:
        self.table: set[tuple[object, int]] | None = None
        FakeMasquerade.tables = []

    async def ensure(self, vip: object, port: int) -> bool:
        changed = self.table != {(vip, port)}
        self.table = {(vip, port)}
        FakeMasquerade.tables.append(self.table)
        return changed

    async def remove(self) -> bool:
        had, self.table = self.table is not None, None
        FakeMasquerade.tables.append(None)
        return had


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeIPVS:
    kernel = FakeIPVS()
    monkeypatch.setattr("pgvip.dataplane.balancer.ipvs.IpvsMasquerade", FakeMasquerade)

    async def fake_open(self: IpvsLoadBalancer) -> FakeIPVS:
        return kernel

    monkeypatch.setattr(IpvsLoadBalancer, "_open", fake_open)
    return kernel


def fake_proc(tmp_path: Path) -> Path:
    for key, value in {
        "net/ipv4/ip_forward": "0",
        "net/ipv4/conf/all/send_redirects": "1",
        "net/ipv4/conf/eth0/send_redirects": "1",
        "net/ipv4/vs/conntrack": "0",
        "net/ipv4/vs/expire_nodest_conn": "0",
    }.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(f"{value}\n")
    return tmp_path


async def test_executor_uses_set_for_edits(fake: FakeIPVS) -> None:
    await execute(fake, plan(None, vs((B1, 1), scheduler="rr", forwarding="dr")))  # type: ignore[arg-type]
    fake.calls.clear()
    await execute(
        fake,
        plan(
            vs((B1, 1), scheduler="rr", forwarding="dr"),
            vs((B1, 2), scheduler="wrr", forwarding="dr"),
        ),
    )  # type: ignore[arg-type]
    assert fake.calls == [("service", "set"), ("dest", "set")]


async def test_executor_error_names_the_operation(fake: FakeIPVS) -> None:
    with pytest.raises(LoadBalancerError) as info:
        await execute(fake, [EditService(SVC)])  # type: ignore[arg-type]
    assert "IPVS EditService 10.20.30.49:5432 wrr persistence 0 failed: ESRCH" in str(info.value)


async def test_balancer_apply_readback_clear(fake: FakeIPVS, tmp_path: Path) -> None:
    root = fake_proc(tmp_path)
    lb = IpvsLoadBalancer(interface="eth0", service=(VIP, 5432), proc_root=root)
    assert isinstance(lb, LoadBalancer) and lb.name == "ipvs"
    assert await lb.actual() is None
    desired = vs((B1, 1), (B2, 3), scheduler="wrr", forwarding="nat", persistence_timeout=60)
    assert await lb.apply(desired) is True
    assert await lb.actual() == desired
    assert (root / "net/ipv4/ip_forward").read_text() == "1\n"
    # One-armed NAT: IPVS connections tracked, and masqueraded by the director.
    assert (root / "net/ipv4/vs/conntrack").read_text() == "1\n"
    assert FakeMasquerade.tables[-1] == {(VIP, 5432)}
    # A dest deleted after its drain: its connections get a reset, not a black hole.
    assert (root / "net/ipv4/vs/expire_nodest_conn").read_text() == "1\n"
    fake.calls.clear()
    assert await lb.apply(desired) is False
    assert fake.calls == []
    draining = vs((B1, 1), (B2, 0), scheduler="wrr", forwarding="nat", persistence_timeout=60)
    assert await lb.apply(draining) is True
    assert fake.calls == [("dest", "set")]
    assert await lb.actual() == draining
    await lb.clear()
    assert await lb.actual() is None and fake.services == {}
    assert (root / "net/ipv4/ip_forward").read_text() == "0\n"
    assert (root / "net/ipv4/vs/conntrack").read_text() == "0\n"
    assert (root / "net/ipv4/vs/expire_nodest_conn").read_text() == "0\n"
    assert FakeMasquerade.tables[-1] is None
    await lb.clear()
    assert fake.closed >= 6


async def test_balancer_leaves_other_services_alone(fake: FakeIPVS, tmp_path: Path) -> None:
    fake.services[("10.9.9.9", 80)] = {"sched": "rr", "timeout": 0, "flags": 2}
    fake.dests[("10.9.9.9", 80)] = {}
    lb = IpvsLoadBalancer(manage_sysctls=False)
    assert await lb.actual() is None  # no key known yet: nothing is ours
    await lb.apply(vs((B1, 1), forwarding="dr"))
    assert FakeMasquerade.tables == [None]  # dr: no masquerade (a nat one is removed)
    await lb.clear()
    assert list(fake.services) == [("10.9.9.9", 80)]


async def test_balancer_rebuilds_a_service_with_mixed_methods(fake: FakeIPVS) -> None:
    lb = IpvsLoadBalancer(service=(VIP, 5432), manage_sysctls=False)
    await lb.apply(vs((B1, 1), (B2, 1), forwarding="dr"))
    fake.dests[("10.20.30.49", 5432)][("10.20.30.52", 5432)]["method"] = 0
    with pytest.raises(LoadBalancerError, match="mixes forwarding methods"):
        await lb.actual()
    fake.calls.clear()
    assert await lb.apply(vs((B1, 1), (B2, 1), forwarding="dr")) is True
    assert fake.calls[:2] == [("service", "del"), ("service", "add")]
    assert await lb.actual() == vs((B1, 1), (B2, 1), forwarding="dr")


async def test_vip_change_moves_the_service(fake: FakeIPVS) -> None:
    lb = IpvsLoadBalancer(service=(VIP, 5432), manage_sysctls=False)
    await lb.apply(vs((B1, 1), forwarding="dr"))
    moved = VirtualService(A("10.20.30.48"), 5432, (RealServer(B1, 5432, 1),), forwarding="dr")
    await lb.apply(moved)
    assert list(fake.services) == [("10.20.30.48", 5432)]
    assert await lb.actual() == moved


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fast", "dr", 0), "unknown scheduler 'fast'"),
        (("rr", "bridge", 0), "unknown forwarding method 'bridge'"),
        (("rr", "dr", -1), "persistence_timeout must be 0-2147483647 s"),
    ],
)
def test_check(args: tuple[str, str, int], message: str) -> None:
    with pytest.raises(LoadBalancerError, match=message):
        IpvsLoadBalancer.check(*args)
    IpvsLoadBalancer.check("mh", "tun", 3600)


def test_real_server_sysctls() -> None:
    assert real_server_sysctls() == {
        "net/ipv4/conf/all/arp_ignore": "1",
        "net/ipv4/conf/all/arp_announce": "2",
    }
    assert real_server_sysctls("eth0")["net/ipv4/conf/eth0/arp_announce"] == "2"


@pytest.mark.skipif(ipvs_available()[0], reason="this kernel has IPVS")
async def test_opening_ipvs_without_ipvs_says_so() -> None:
    lb = IpvsLoadBalancer(service=(VIP, 5432))
    with pytest.raises(
        LoadBalancerError, match="IPVS unavailable: genetlink family IPVS not found"
    ):
        await lb.actual()


def test_module_imports_no_pyroute2_ipvs_at_top_level() -> None:
    # pyroute2 is imported lazily so choosing nftables costs nothing extra.
    assert "AsyncIPVS" not in vars(ipvs_mod)
