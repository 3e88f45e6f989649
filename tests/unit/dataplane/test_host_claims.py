"""Claims as abstract unix sockets (pgvip.dataplane.host_claims), and the sysctls two instances
share (SysctlKeeper with claims): the last instance to stop directing puts a value back."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pgvip.dataplane.host_claims import Claim, ClaimTaken, held, is_held
from pgvip.dataplane.sysctl import SysctlKeeper
from pgvip.naming import StateNames

KEY = "net/ipv4/ip_forward"


def unique() -> str:
    return f"t{secrets.token_hex(4)}"


def test_a_claim_is_exclusive_until_released() -> None:
    name = f"pgvip/test/{unique()}"
    first = Claim(name)
    assert is_held(name) and first.held
    with pytest.raises(ClaimTaken):
        Claim(name)
    first.release()
    assert not is_held(name) and not first.held
    Claim(name).release()


def test_only_pgvip_names_are_claims() -> None:
    with pytest.raises(ValueError):
        Claim("other/thing")


def test_held_reads_abstract_names_from_proc_net_unix(tmp_path: Path) -> None:
    fake = tmp_path / "unix"
    fake.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        "0000: 00000002 00000000 00000000 0002 01 101 @pgvip/instance/x\n"
        "0000: 00000002 00000000 00000000 0002 01 102 @pgvip/sysctl/x/net/ipv4/ip_forward=0\n"
        "0000: 00000002 00000000 00000000 0002 01 103 /run/pgvip/not-abstract\n"
        "0000: 00000002 00000000 00000000 0002 01 104 @other\n"
        "0000: 00000002 00000000 00000000 0002 01 105\n"
    )
    assert held(path=fake) == {"pgvip/instance/x", "pgvip/sysctl/x/net/ipv4/ip_forward=0"}
    assert held("pgvip/sysctl/", path=fake) == {"pgvip/sysctl/x/net/ipv4/ip_forward=0"}
    assert held(path=tmp_path / "missing") == set()


def proc(tmp_path: Path, value: str) -> Path:
    (tmp_path / "net/ipv4").mkdir(parents=True, exist_ok=True)
    (tmp_path / KEY).write_text(f"{value}\n")
    return tmp_path


def value(root: Path) -> str:
    return (root / KEY).read_text().strip()


async def test_one_instances_restore_leaves_forwarding_another_still_claims(
    tmp_path: Path,
) -> None:
    root = proc(tmp_path, "0")
    x = SysctlKeeper(proc_root=root, names=StateNames(unique()))
    y = SysctlKeeper(proc_root=root, names=StateNames(unique()))
    assert await x.ensure({KEY: "1"}) is True
    assert await y.ensure({KEY: "1"}) is False  # already set by x: y adopts x's "before"
    assert y.saved == {KEY: ("0", "1")}
    await x.restore()
    assert value(root) == "1"  # y still directs
    await y.restore()
    assert value(root) == "0"  # the last one out puts it back


async def test_without_claims_the_first_restore_turns_it_off(tmp_path: Path) -> None:
    # What two instances did to each other before claims (and what a keeper inside another
    # namespace still does: claims are of our own namespace).
    root = proc(tmp_path, "0")
    x = SysctlKeeper(proc_root=root)
    y = SysctlKeeper(proc_root=root, netns="elsewhere", names=StateNames(unique()))
    assert y.names is None
    await x.ensure({KEY: "1"})
    await x.restore()
    assert value(root) == "0"


async def test_a_value_nobody_claimed_is_never_touched(tmp_path: Path) -> None:
    root = proc(tmp_path, "1")  # the admin's
    x = SysctlKeeper(proc_root=root, names=StateNames(unique()))
    assert await x.ensure({KEY: "1"}) is False
    assert x.saved == {}
    await x.restore()
    assert value(root) == "1"


async def test_a_claim_dies_with_its_holder(tmp_path: Path) -> None:
    # kill -9 of x drops its claims (here: released by hand): y is then the last one.
    root = proc(tmp_path, "0")
    x_names, y_names = StateNames(unique()), StateNames(unique())
    x = SysctlKeeper(proc_root=root, names=x_names)
    await x.ensure({KEY: "1"})
    assert is_held(x_names.sysctl_claim(KEY, "0"))
    y = SysctlKeeper(proc_root=root, names=y_names)
    await y.ensure({KEY: "1"})
    for claim in x._claims.values():
        claim.release()
    await y.restore()
    assert value(root) == "0"
    assert not is_held(y_names.sysctl_claim(KEY, "0"))
