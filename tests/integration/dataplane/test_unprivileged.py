"""The deployment shape: `ip netns exec` into the node, a non-root user with only
CAP_NET_ADMIN + CAP_NET_RAW (systemd AmbientCapabilities), no netns= arguments anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .conftest import NetLab

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, socket
    from ipaddress import ip_interface
    from pgvip.dataplane.addresses import AddressManager, release_all
    from pgvip.dataplane.announce import Announcer
    from pgvip.dataplane.privileges import check_capabilities, preflight
    from pgvip.dataplane.vrrp_socket import VrrpSocket

    async def main():
        out = {"missing": check_capabilities(), "preflight": preflight(["eth0"])}
        vip = ip_interface("192.0.2.50/32")
        async with AddressManager("eth0") as addrs:
            out["added"] = await addrs.add(vip)
            out["owned"] = sorted(map(str, await addrs.owned()))
        out["announced"] = await Announcer().burst("eth0", [vip], count=1, interval=0)
        async with await VrrpSocket.open("eth0", socket.AF_INET, "192.0.2.1") as sock:
            sock.send(b"\\x31\\x33\\x64\\x01\\x00\\x64\\x00\\x00\\xc0\\x00\\x02\\x32")
            out["vrrp_sent"] = sock.sent
        out["released"] = [str(r.address) for r in await release_all("eth0")]
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def run_as_nobody(netlab: NetLab, caps: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netlab.ns("a"),
         "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
         sys.executable, "-c", SCRIPT],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_two_capabilities_are_enough(netlab: NetLab) -> None:
    result = run_as_nobody(netlab, "+net_admin,+net_raw")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "missing": [],
        "preflight": [],
        "added": True,
        "owned": ["192.0.2.50/32"],
        "announced": 1,
        "vrrp_sent": 1,
        "released": ["192.0.2.50/32"],
    }


def test_without_capabilities_the_first_step_explains(netlab: NetLab) -> None:
    result = run_as_nobody(netlab, "+net_raw")
    assert result.returncode != 0
    assert (
        "AddressError: adding 192.0.2.50/32 to eth0 failed: needs CAP_NET_ADMIN "
        "(permission denied)" in result.stderr
    )
