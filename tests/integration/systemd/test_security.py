"""The sandbox of deploy/pgvip.service: `systemd-analyze security` scores it (goal ≤ 2.0,
keepalived's Debian unit measured beside it), and pgvip still does everything it needs inside
it: netlink, raw sockets, the nftables RO dataplane (nft, /proc/sys/net), /run/pgvip."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.integration.systemd.conftest import (
    SOURCE,
    STATE,
    SUMMARY,
    UNIT,
    VIP,
    Pgvip,
    render_config,
    wait_for,
)
from tests.integration.systemd.machine import VENV, Machine

pytestmark = pytest.mark.integration

EXPOSURE_GOAL = 2.0


def exposure(machine: Machine, unit: str) -> tuple[float, str]:
    out = machine.sh(f"systemd-analyze security --no-pager {unit}", check=False)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+) (\w+)", out)
    assert found, out
    return float(found[1]), out


def test_exposure_score_is_at_most_2(machine: Machine) -> None:
    score, report = exposure(machine, UNIT)
    keepalived, _ = exposure(machine, "keepalived.service")
    SUMMARY.append(f"systemd-analyze security: pgvip.service {score}, "
                   f"keepalived.service {keepalived} (Debian 12's unit)")  # fmt: skip
    assert score <= EXPOSURE_GOAL, report


def test_the_nftables_ro_dataplane_works_inside_the_sandbox(pgvip: Pgvip) -> None:
    # The only node, and the leader: it directs the RO VIP itself and falls back to the
    # primary (itself), which takes nft, netlink and writes to /proc/sys/net.
    pgvip.m.write("/etc/pgvip/pgvip.toml", render_config(ro=True))
    member = {"name": "standin", "role": "leader", "state": "running", "host": SOURCE,
              "port": 5432, "timeline": 1}  # fmt: skip
    pgvip.m.write(STATE, json.dumps({"primary": 200, "cluster": {"members": [member]}}))
    # Something that accepts on 5432, for pgvip's port check of its only backend.
    pgvip.m.sh(f"systemd-run --unit=fake-postgres {VENV}/bin/python -m http.server "
               f"--bind {SOURCE} 5432")  # fmt: skip
    # From known values: pgvip must write these itself, through the sandbox.
    sysctls = ("net/ipv4/ip_forward", "net/ipv4/conf/eth0/send_redirects")
    pgvip.m.host_net(
        "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv4.conf.eth0.send_redirects=1"
    )
    pgvip.start()
    pgvip.wait_vip()
    wait_for(lambda: "192.0.2.49/24" in pgvip.m.host_net("ip", "-o", "addr"), 15, "the RO VIP")
    wait_for(lambda: _has_table(pgvip), 10, "pgvip's nftables table")
    values = [pgvip.m.host_net("cat", f"/proc/sys/{key}").strip() for key in sysctls]
    assert values == ["1", "0"], dict(zip(sysctls, values, strict=True))
    assert pgvip.m.sh("test -d /run/pgvip && stat -c %U /run/pgvip").strip() == "pgvip"
    ro = pgvip.status()["ro"]
    errors = [e["MESSAGE"] for e in pgvip.journal() if int(e.get("PRIORITY", 6)) <= 3]
    assert not errors, errors
    assert ro["directing"] and ro["apply_errors"] == 0, ro
    assert [(b["address"], b["state"]) for b in ro["backends"]] == [(SOURCE, "active")], ro
    assert SOURCE in pgvip.m.host_net("nft", "list", "table", "ip", "pgvip")


def _has_table(pgvip: Pgvip) -> bool:
    out = pgvip.m.host_net("nft", "-j", "list", "tables")
    return any(
        "table" in item and item["table"]["name"] == "pgvip" for item in json.loads(out)["nftables"]
    )


def test_without_its_read_write_path_the_sandbox_blocks_the_sysctl_writes(pgvip: Pgvip) -> None:
    # The control for the test above: ProtectKernelTunables= is in force, and only
    # ReadWritePaths=/proc/sys/net lets pgvip through.
    pgvip.dropin("no-proc-sys-net", "[Service]\nReadWritePaths=\n")
    pgvip.m.write("/etc/pgvip/pgvip.toml", render_config(ro=True))
    member = {"name": "standin", "role": "leader", "state": "running", "host": SOURCE,
              "port": 5432, "timeline": 1}  # fmt: skip
    pgvip.m.write(STATE, json.dumps({"primary": 200, "cluster": {"members": [member]}}))
    pgvip.m.host_net("sysctl", "-qw", "net.ipv4.ip_forward=0")
    pgvip.start()
    wait_for(lambda: "Read-only file system" in "\n".join(pgvip.messages()), 15,
             "a refused sysctl write in the journal")  # fmt: skip
    assert pgvip.m.host_net("cat", "/proc/sys/net/ipv4/ip_forward").strip() == "0"


def test_a_notify_command_runs_inside_the_sandbox(pgvip: Pgvip) -> None:
    # fork/exec of a child under SystemCallFilter=, and the one place it may write.
    pgvip.m.write("/usr/local/bin/pgvip-notify-test",
                  '#!/bin/sh\necho "$@" >> /run/pgvip/notify.log\n')  # fmt: skip
    pgvip.m.sh("chmod 755 /usr/local/bin/pgvip-notify-test")
    config = render_config() + '\n[notify]\ncommand = "/usr/local/bin/pgvip-notify-test"\n'
    pgvip.m.write("/etc/pgvip/pgvip.toml", config)
    pgvip.start()
    pgvip.wait_vip()
    log = "/run/pgvip/notify.log"
    wait_for(lambda: "rw MASTER" in pgvip.m.sh(f"cat {log}", check=False), 10, "the notify call")
    # UMask=0077: what the service creates is private to pgvip.
    assert pgvip.m.sh(f"stat -c '%U %a' {log}").split() == ["pgvip", "600"]


# pgvip's own IPVS probe (the `auto` dataplane choice): a generic-netlink CTRL_GETFAMILY for
# "IPVS", over an AF_NETLINK/NETLINK_GENERIC socket, the socket and syscalls the IPVS
# dataplane then uses for its commands.
GENL_PROBE = """\
from pgvip.dataplane.balancer.choice import ipvs_available
found, why = ipvs_available()
print(f"genl-probe: found={found} {why}", flush=True)
"""


def _genl_probe(pgvip: Pgvip, extra: str = "") -> str:
    """Run GENL_PROBE as pgvip.service itself: the shipped unit's user, capabilities and
    sandbox, with only ExecStart (and what a one-shot needs) replaced by a drop-in."""
    python = pgvip.m.sh("readlink -f /usr/bin/pgvip").strip().rsplit("/", 1)[0] + "/python"
    pgvip.m.write("/usr/local/lib/pgvip-test/genl_probe.py", GENL_PROBE)
    pgvip.dropin("genl-probe", "[Service]\nType=oneshot\nExecStart=\n"
                 f"ExecStart={python} /usr/local/lib/pgvip-test/genl_probe.py\n"
                 f"ExecStopPost=\nRestart=no\nWatchdogSec=0\n{extra}")  # fmt: skip
    pgvip.start()
    lines = [m for m in pgvip.messages() if m.startswith("genl-probe:")]
    assert len(lines) == 1, pgvip.messages()
    return lines[0]


def test_the_sandbox_lets_pgvip_ask_generic_netlink_for_ipvs(pgvip: Pgvip) -> None:
    """RestrictAddressFamilies= allows AF_NETLINK whatever its protocol, and
    SystemCallFilter= keeps socket/bind/sendto/recvfrom: the kernel's generic-netlink
    controller answers. This kernel has no IPVS, so the answer is "not found" (ENOENT), which
    is the controller's reply, not a refusal by the sandbox (EAFNOSUPPORT or EPERM)."""
    assert _genl_probe(pgvip) == "genl-probe: found=False genetlink family IPVS not found"


def test_without_af_netlink_the_same_probe_is_refused(pgvip: Pgvip) -> None:
    # The control for the test above: the probe does tell a refusal from "no IPVS".
    line = _genl_probe(pgvip, "RestrictAddressFamilies=\nRestrictAddressFamilies=AF_INET AF_UNIX\n")
    assert line.startswith("genl-probe: found=False cannot ask generic netlink for IPVS:"), line
    assert "Address family not supported" in line, line


def test_the_l3_modes_bird_runs_inside_the_sandbox_and_dies_with_pgvip(pgvip: Pgvip) -> None:
    """bgp mode (docs/l3-mode.md): pgvip starts BIRD as its child under the unit's sandbox,
    as the unit's user, and the kernel kills BIRD when pgvip is killed. No router answers
    here: only the speaker's life inside the unit is checked (the routes are checked in
    tests/integration/test_bgp_lab.py)."""
    root = pgvip.m.root
    # Debian's bird2 binary from this (Debian 12) host, and the one library of it that the
    # container's minimal root lacks.
    lib = Path("/usr/lib/x86_64-linux-gnu/libssh-gcrypt.so.4").resolve()
    shutil.copy2("/usr/sbin/bird", root / "usr/sbin/bird")
    shutil.copy2(lib, root / "usr/lib/x86_64-linux-gnu/libssh-gcrypt.so.4")
    config = render_config().replace(f'vip = "{VIP}/24"', 'vip = "198.51.100.50"\nannounce = "bgp"')
    config += '\n[bgp]\nlocal_as = 65101\npeer_as = 65000\npeers = ["192.0.2.1"]\n'
    pgvip.m.write("/etc/pgvip/pgvip.toml", config + f'source = "{SOURCE}"\n')
    pgvip.start()  # returns once READY=1
    wait_for(lambda: "198.51.100.50/32" in pgvip.m.host_net("ip", "-o", "addr", "show", "lo"),
             10, "the RW VIP on lo")  # fmt: skip
    main = pgvip.main_pid()

    def bird_child() -> int | None:
        kids = pgvip.m.sh(f"cat /proc/{main}/task/{main}/children", check=False).split()
        for kid in kids:
            if pgvip.m.sh(f"cat /proc/{kid}/comm", check=False).strip() == "bird":
                return int(kid)
        return None

    bird = wait_for(bird_child, 10, "BIRD as pgvip's child")
    uid = pgvip.m.sh(f"grep ^Uid: /proc/{bird}/status").split()[1]
    assert uid == pgvip.m.sh("id -u pgvip").strip()
    messages = "\n".join(pgvip.messages())
    assert "BGP speaker started" in messages and "rejects" not in messages, messages
    pgvip.m.sh(f"kill -9 {main}")
    probe = f"test -e /proc/{bird} && echo alive || echo gone"
    wait_for(lambda: pgvip.m.sh(probe, check=False).strip() == "gone", 5, "BIRD gone with pgvip")
