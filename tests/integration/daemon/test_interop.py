"""Interop with real peers: Debian's keepalived (VRRPv3, same VRID) and tshark's
VRRP dissector as an independent judge of the wire format."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.integration.daemon.conftest import VIP, DaemonLab, HolderSampler, wait_holder

pytestmark = pytest.mark.integration

KEEPALIVED_CONF = """
global_defs {{
    vrrp_version 3
    router_id ka-c
}}
vrrp_instance VI_PGVIP {{
    state BACKUP
    interface eth0
    virtual_router_id 50
    priority {priority}
    advert_int 0.2
    virtual_ipaddress {{
        {vip}/24
    }}
}}
"""


def start_keepalived(
    dlab: DaemonLab, host: str, priority: int
) -> tuple[subprocess.Popen[bytes], str]:
    keepalived = shutil.which("keepalived") or "/usr/sbin/keepalived"
    workdir = dlab.tmp / f"keepalived-{host}"
    workdir.mkdir()
    conf = workdir / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF.format(priority=priority, vip=VIP))
    log_path = workdir / "keepalived.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        ["ip", "netns", "exec", dlab.net.ns(host), keepalived, "--dont-fork", "--log-console",
         "--log-detail", "--vrrp", "-f", str(conf), "-p", str(workdir / "k.pid"),
         "-r", str(workdir / "vrrp.pid")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    dlab.extra_procs.append(proc)
    return proc, str(log_path)


def read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def test_keepalived_yields_to_pgvip_and_takes_over_when_pgvip_faults(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a", priority=200)
    wait_holder(dlab, ["a"])
    _, ka_log = start_keepalived(dlab, "c", priority=100)
    time.sleep(2.0)
    assert dlab.holders() == ["a"], "keepalived must stay BACKUP under a higher-priority pgvip"
    assert "Entering BACKUP STATE" in read(ka_log)
    assert "Entering MASTER STATE" not in read(ka_log)

    with HolderSampler(dlab) as sampler:
        a.set_primary(503)  # pgvip goes FAULT: VIP removed, then priority 0
        took = wait_holder(dlab, ["c"], timeout=5)
    assert took < 1.5, f"keepalived took {took:.2f}s after pgvip's priority 0"
    assert "priority 0" in read(ka_log)
    assert sampler.samples > 0
    assert sampler.max_holders <= 1, f"two holders at once: {sampler.double[:3]}"

    a.set_primary(200)  # eligible again with preempt: pgvip takes it back from keepalived
    wait_holder(dlab, ["a"], timeout=5)


def test_tshark_decodes_pgvip_adverts_as_vrrpv3_with_correct_checksum(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a", priority=200)
    wait_holder(dlab, ["a"])
    pcap = dlab.tmp / "vrrp.pcap"
    subprocess.run(
        ["ip", "netns", "exec", dlab.net.ns("b"), "tshark", "-q", "-i", "eth0", "-a",
         "duration:2", "-f", "ip proto 112", "-w", str(pcap)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    out = subprocess.run(
        ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=,", "-e", "vrrp.version",
         "-e", "vrrp.type", "-e", "vrrp.virt_rtr_id", "-e", "vrrp.prio", "-e", "ip.ttl",
         "-e", "vrrp.checksum.status", "-e", "vrrp.ip_addr", "-e", "ip.dst"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.split()  # fmt: skip
    assert len(out) >= 5, f"expected ~10 adverts in 2 s at advert_int 20 cs, got {out}"
    for line in out:
        version, kind, vrid, prio, ttl, checksum, addr, dst = line.split(",")
        assert (version, kind, vrid, prio, ttl) == ("3", "1", "50", "200", "255")
        # Wireshark's checksum status: 0 bad, 1 good, 2 unverified
        assert checksum == "1", f"tshark checksum status {checksum} (1 = good)"
        assert (addr, dst) == (VIP, "224.0.0.18")
