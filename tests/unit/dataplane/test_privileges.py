"""Capability parsing and interface checks, from sample /proc status text (no root needed)."""

from __future__ import annotations

import socket

import pytest

from pgvip.dataplane.privileges import (
    CAP_NET_ADMIN,
    CAP_NET_RAW,
    PreflightError,
    check_capabilities,
    describe_missing_interface,
    interface_exists,
    interface_names,
    missing_capabilities,
    parse_effective_capabilities,
    preflight,
    require,
)

STATUS_TEMPLATE = """\
Name:\tpgvip
Umask:\t0022
State:\tS (sleeping)
Uid:\t998\t998\t998\t998
CapInh:\t0000000000000000
CapPrm:\t{cap}
CapEff:\t{cap}
CapBnd:\t000001ffffffffff
CapAmb:\t{cap}
NoNewPrivs:\t1
"""


def status(cap_eff: int) -> str:
    return STATUS_TEMPLATE.format(cap=f"{cap_eff:016x}")


def test_root_has_everything() -> None:
    text = status(0x000001FFFFFFFFFF)
    assert parse_effective_capabilities(text) == 0x000001FFFFFFFFFF
    assert check_capabilities(text) == []


def test_systemd_ambient_pair_is_enough() -> None:
    # AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW gives exactly bits 12 and 13: 0x3000.
    assert check_capabilities(status(0x3000)) == []


@pytest.mark.parametrize(
    ("cap_eff", "missing"),
    [
        (0, ["CAP_NET_ADMIN", "CAP_NET_RAW"]),
        (1 << CAP_NET_ADMIN, ["CAP_NET_RAW"]),
        (1 << CAP_NET_RAW, ["CAP_NET_ADMIN"]),
        (0x0000000000000400, ["CAP_NET_ADMIN", "CAP_NET_RAW"]),  # CAP_NET_BIND_SERVICE only
    ],
)
def test_missing_capabilities(cap_eff: int, missing: list[str]) -> None:
    assert check_capabilities(status(cap_eff)) == missing
    assert missing_capabilities(cap_eff) == missing


def test_only_the_effective_set_counts() -> None:
    text = status(0).replace("CapPrm:\t0000000000000000", "CapPrm:\t0000000000003000")
    assert check_capabilities(text) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]


def test_unreadable_status_is_an_error() -> None:
    with pytest.raises(PreflightError, match="no CapEff line"):
        parse_effective_capabilities("Name:\tx\n")
    with pytest.raises(PreflightError, match="unreadable CapEff value 'zz'"):
        parse_effective_capabilities("CapEff:\tzz\n")


def test_unknown_capability_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="CAP_SYS_TIME"):
        missing_capabilities(0, ["CAP_SYS_TIME"])


def test_check_capabilities_reads_the_current_thread() -> None:
    # Whatever this process holds, the answer is a sub-list of the two names, in order.
    found = check_capabilities()
    assert found in ([], ["CAP_NET_ADMIN"], ["CAP_NET_RAW"], ["CAP_NET_ADMIN", "CAP_NET_RAW"])


def test_missing_interface_message() -> None:
    assert (
        describe_missing_interface("eth9", ["lo", "eth0"])
        == "interface eth9 does not exist (available: lo, eth0)"
    )
    assert (
        describe_missing_interface("eth9", []) == "interface eth9 does not exist (available: none)"
    )


def test_interface_lookup_uses_this_namespace() -> None:
    names = interface_names()
    assert names[0] == "lo" or "lo" not in names  # sorted by index: lo is 1 when present
    assert all(interface_exists(name) for name in names)
    assert not interface_exists("pgvip-nope0")
    assert names == [name for _, name in sorted(socket.if_nameindex())]


def test_preflight_lists_every_problem() -> None:
    problems = preflight(["pgvip-nope0", "pgvip-nope0", "lo"], status_text=status(1 << CAP_NET_RAW))
    assert len(problems) == 2
    assert problems[0].startswith("missing CAP_NET_ADMIN, needed to add and remove VIP addresses")
    assert "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW" in problems[0]
    assert problems[1].startswith("interface pgvip-nope0 does not exist (available: ")


def test_preflight_error_joins_problems() -> None:
    error = PreflightError(["one", "two"])
    assert error.problems == ("one", "two")
    assert str(error) == "one; two"


def test_require_raises_with_the_problems() -> None:
    with pytest.raises(PreflightError) as info:
        require(["pgvip-nope0"])
    assert any(p.startswith("interface pgvip-nope0 does not exist") for p in info.value.problems)
