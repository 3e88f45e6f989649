"""The RO balancer interface: VirtualService validation, the `auto` choice, shared helpers."""

from __future__ import annotations

import os
from ipaddress import ip_address
from typing import Any

import pytest

from pgvip.dataplane.balancer import (
    LoadBalancer,
    LoadBalancerError,
    RealServer,
    VirtualService,
    virtual_service,
)
from pgvip.dataplane.balancer.choice import choose_dataplane, ipvs_available
from pgvip.dataplane.balancer.ipvs import IpvsLoadBalancer
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer
from pgvip.dataplane.command import run_command
from pgvip.policy.backends import Backend

A = ip_address
VIP = A("10.20.30.49")


def has_ipvs() -> tuple[bool, str]:
    return True, "genetlink family IPVS found"


def no_ipvs() -> tuple[bool, str]:
    return False, "genetlink family IPVS not found"


def nft_present(name: str) -> str | None:
    return f"/usr/sbin/{name}"


def nft_missing(name: str) -> str | None:
    return None


def test_backends_are_sorted_so_order_does_not_matter() -> None:
    a = RealServer(A("10.0.0.2"), 5432, 1)
    b = RealServer(A("10.0.0.10"), 5432, 2)
    assert VirtualService(VIP, 5432, (b, a)) == VirtualService(VIP, 5432, (a, b))
    assert VirtualService(VIP, 5432, (b, a)).backends == (a, b)
    assert VirtualService(VIP, 5432).family == 4
    assert VirtualService(A("fd00::1"), 5432).family == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"scheduler": "fastest"},
            "unknown scheduler 'fastest'; use one of lc, mh, rr, sh, wlc, wrr",
        ),
        ({"forwarding": "masq"}, "unknown forwarding method 'masq'; use one of dr, nat, tun"),
        ({"protocol": "udp"}, "protocol 'udp' is not supported"),
        ({"port": 0}, "VIP port must be 1-65535"),
        ({"persistence_timeout": -1}, "persistence_timeout must be >= 0"),
        (
            {"backends": (RealServer(A("fd00::2"), 5432),)},
            "is IPv6 but the VIP 10.20.30.49 is IPv4",
        ),
        ({"backends": (RealServer(A("10.0.0.2"), 70000),)}, "port must be 1-65535"),
        ({"backends": (RealServer(A("10.0.0.2"), 5432, -1),)}, "weight must be 0-65535"),
        (
            {"backends": (RealServer(A("10.0.0.2"), 5432), RealServer(A("10.0.0.2"), 5432, 3))},
            "10.0.0.2:5432 is listed twice",
        ),
    ],
)
def test_virtual_service_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"vip": VIP, "port": 5432, **kwargs}
    with pytest.raises(LoadBalancerError, match=message):
        VirtualService(**fields)  # type: ignore[arg-type]


def test_virtual_service_from_policy_backends() -> None:
    backends = [
        Backend(A("10.0.0.3"), 5432, 2, "p3"),
        Backend(A("10.0.0.2"), 5432, 0, "p2", draining=True),
    ]
    vs = virtual_service("10.20.30.49", 5432, backends, scheduler="wrr")
    assert vs == VirtualService(
        VIP,
        5432,
        (RealServer(A("10.0.0.2"), 5432, 0), RealServer(A("10.0.0.3"), 5432, 2)),
        scheduler="wrr",
    )


def test_auto_picks_ipvs_when_the_kernel_has_it() -> None:
    cls, reason = choose_dataplane("auto", probe=has_ipvs, which=nft_present)
    assert cls is IpvsLoadBalancer
    assert reason == "IPVS available: genetlink family IPVS found; using IPVS"
    # "dr" needs no nft on the director; one-armed "nat" needs it for its masquerade.
    cls, _ = choose_dataplane("auto", forwarding="dr", probe=has_ipvs, which=nft_missing)
    assert cls is IpvsLoadBalancer
    with pytest.raises(LoadBalancerError) as info:
        choose_dataplane("auto", probe=has_ipvs, which=nft_missing)
    assert "IPVS 'nat' forwarding is one-armed: it needs the 'nft' command" in str(info.value)
    assert "ro.forwarding = 'dr'" in str(info.value)


def test_auto_falls_back_to_nftables_and_says_why() -> None:
    cls, reason = choose_dataplane("auto", probe=no_ipvs, which=nft_present)
    assert cls is NftablesLoadBalancer
    assert reason == "IPVS unavailable: genetlink family IPVS not found; using nftables"
    lb = cls(interface="eth0", netns=None, service=(VIP, 5432))
    assert isinstance(lb, LoadBalancer) and lb.name == "nftables"


def test_explicit_ipvs_without_ipvs_is_an_error_not_a_fallback() -> None:
    with pytest.raises(LoadBalancerError) as info:
        choose_dataplane("ipvs", probe=no_ipvs, which=nft_present)
    assert "dataplane 'ipvs' requested but IPVS is unavailable" in str(info.value)
    assert "genetlink family IPVS not found" in str(info.value)


def test_explicit_nftables_does_not_probe_ipvs() -> None:
    def exploding_probe() -> tuple[bool, str]:
        raise AssertionError("must not probe")

    cls, reason = choose_dataplane("nftables", probe=exploding_probe, which=nft_present)
    assert cls is NftablesLoadBalancer and reason == "nftables requested"


def test_missing_nft_names_the_package() -> None:
    with pytest.raises(LoadBalancerError, match="install the 'nftables' package"):
        choose_dataplane("auto", probe=no_ipvs, which=nft_missing)


def test_nftables_limits_are_checked_at_start() -> None:
    with pytest.raises(LoadBalancerError) as info:
        choose_dataplane("auto", scheduler="lc", probe=no_ipvs, which=nft_present)
    assert "scheduler 'lc' needs IPVS" in str(info.value)
    assert "[IPVS unavailable: genetlink family IPVS not found; using nftables]" in str(info.value)
    with pytest.raises(LoadBalancerError, match="forwarding 'dr' needs IPVS"):
        choose_dataplane("nftables", forwarding="dr", which=nft_present)
    cls, _ = choose_dataplane("auto", scheduler="mh", forwarding="dr", probe=has_ipvs)
    assert cls is IpvsLoadBalancer


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requested": "haproxy"}, "unknown dataplane 'haproxy'; use one of auto, ipvs, nftables"),
        ({"requested": "ipvs", "scheduler": "fast"}, "unknown scheduler 'fast'"),
        ({"requested": "auto", "forwarding": "bridge"}, "unknown forwarding method 'bridge'"),
    ],
)
def test_bad_names_are_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LoadBalancerError, match=message):
        choose_dataplane(probe=has_ipvs, which=nft_present, **kwargs)


def test_real_ipvs_probe_agrees_with_proc() -> None:
    available, detail = ipvs_available()
    # Asking may load ip_vs, which then creates /proc/net/ip_vs.
    assert available == os.path.exists("/proc/net/ip_vs")
    assert "IPVS" in detail


async def test_run_command_reports_stderr_and_missing_binaries() -> None:
    assert await run_command(["sh", "-c", "cat"], stdin="hello") == "hello"
    with pytest.raises(LoadBalancerError, match="failed: oops"):
        await run_command(["sh", "-c", "echo oops >&2; exit 3"])
    with pytest.raises(LoadBalancerError, match="failed: exit status 4"):
        await run_command(["sh", "-c", "exit 4"])
    with pytest.raises(LoadBalancerError, match="cannot run '/no/such/tool': not found$"):
        await run_command(["/no/such/tool"])


@pytest.mark.parametrize(
    ("dataplane", "forwarding", "words"),
    [
        ("ipvs", "nat", ("one-armed", "vs.conntrack=1", "pgvip_ipvs", "director's address")),
        ("nftables", "nat", ("one-armed", "masquerade", "director's address")),
        ("ipvs", "dr", ("client's address is kept", "RO VIP on lo", "L2 segment")),
        ("ipvs", "tun", ("client's address is kept", "tunnel", "does not set up")),
    ],
)
def test_explain_forwarding_says_what_each_method_needs_and_costs(
    dataplane: str, forwarding: str, words: tuple[str, ...]
) -> None:
    from pgvip.dataplane.balancer.choice import explain_forwarding

    text = explain_forwarding(dataplane, forwarding)
    assert all(w in text for w in words), text
