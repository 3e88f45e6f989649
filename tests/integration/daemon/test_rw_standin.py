"""`pgvip run` end to end with real sockets, netlink and processes; Patroni's answers
come from a stand-in so each VRRP behaviour can be provoked on demand."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon.conftest import (
    PGVIP,
    VIP,
    DaemonLab,
    HolderSampler,
    wait_for,
    wait_holder,
)

pytestmark = pytest.mark.integration


def _takeover_on_priority_zero(line: dict[str, Any]) -> bool:
    reason = line.get("reason", "")
    return line.get("event") == "transition" and ("priority 0" in reason or "resigned" in reason)


def test_vip_goes_to_the_primary_only(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    dlab.start_standin("b", primary=503)
    dlab.start_pgvip("a")
    dlab.start_pgvip("b")
    wait_holder(dlab, ["a"])
    time.sleep(1.0)
    assert dlab.holders() == ["a"]
    assert ("BACKUP", "MASTER") in dlab.nodes["a"].transitions()
    assert all(to != "MASTER" for _, to in dlab.nodes["b"].transitions())


def test_switchover_moves_vip_fast_and_never_to_two_hosts(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    b = dlab.start_standin("b", primary=503)
    dlab.start_pgvip("a")
    dlab.start_pgvip("b")
    wait_holder(dlab, ["a"])
    with HolderSampler(dlab) as sampler:
        for old, new, holder in ((a, b, "b"), (b, a, "a"), (a, b, "b")):
            # Patroni's order: the old primary says no before the new one says yes.
            old.set_primary(503)
            time.sleep(0.2)
            new.set_primary(200)
            took = wait_holder(dlab, [holder], timeout=5)
            # poll 0.1 s + Skew_Time 0.044 s + apply: generous slack for a loaded CI box
            assert took < 1.5, f"VIP took {took:.2f}s to follow the primary"
    assert sampler.samples > 20
    assert sampler.max_holders == 1, f"two holders at once: {sampler.double[:3]}"
    b.wait_log(_takeover_on_priority_zero, "b's takeover on a's priority-0 advert")


def test_sigterm_releases_at_once_and_a_peer_takes_over(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    # Both say yes: only the VRRP priority decides (Patroni never does this; VRRP must cope).
    dlab.start_standin("b", primary=200)
    dlab.start_pgvip("a", priority=200)
    dlab.start_pgvip("b", priority=100)
    wait_holder(dlab, ["a"])
    time.sleep(0.5)
    with HolderSampler(dlab) as sampler:
        started = time.monotonic()
        code = dlab.stop_pgvip("a", signal.SIGTERM)
        exited = time.monotonic() - started
        took = wait_holder(dlab, ["b"], timeout=5)
    assert code == 0
    assert exited < 1.0, f"pgvip took {exited:.2f}s to exit on SIGTERM"
    # priority 0 -> Skew_Time (0.12 s at priority 100, advert_int 20): far below Master_Down
    assert took < 1.0
    assert sampler.samples > 0
    assert sampler.max_holders <= 1, f"two holders at once: {sampler.double[:3]}"


def test_vip_deleted_by_hand_comes_back(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    dlab.net.ip("a", "addr", "del", f"{VIP}/24", "dev", "eth0")
    took = wait_holder(dlab, ["a"], timeout=5)
    assert took < 2.5  # the netlink watcher reacts at once; the periodic pass within 2 s
    dlab.nodes["a"].wait_log(lambda e: "reconcile" in e.get("event", ""), "a reconcile line")


def test_vip_added_by_hand_on_a_backup_is_removed(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=503)
    dlab.start_pgvip("a")
    time.sleep(1.0)
    dlab.net.ip("a", "addr", "add", f"{VIP}/24", "dev", "eth0")
    wait_holder(dlab, [], timeout=5)


def test_patroni_unreachable_releases_after_fall(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    assert a.standin is not None
    a.standin.kill()
    a.standin.wait()
    # fall 3 polls of 0.1 s, each failing at once (connection refused)
    took = wait_holder(dlab, [], timeout=5)
    assert took < 2.0
    time.sleep(0.5)  # about five more refused polls while in FAULT
    causes = [e["cause"] for e in a.log_lines() if e.get("event") == "cannot ask Patroni"]
    # A poll already on a kept-alive connection when Patroni died may fail first as
    # "disconnected"; that is a different error and gets its own line.
    assert causes in (["refused"], ["disconnected", "refused"]), (
        f"a repeated error must be logged once: {causes}"
    )


def test_failsafe_keeps_the_vip_while_patroni_is_unreachable(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    a.set_primary(200, failsafe=True)
    dlab.start_pgvip("a", patroni={"failsafe_max": 3.0})
    wait_holder(dlab, ["a"])
    time.sleep(1.5)  # /patroni (and its failsafe flag) is read at the first poll
    assert a.standin is not None
    a.standin.kill()
    a.standin.wait()
    time.sleep(1.5)
    assert dlab.holders() == ["a"], "failsafe active at last contact: the VIP must stay"
    took = wait_holder(dlab, [], timeout=6)  # ... but not beyond failsafe_max
    assert took < 4.5


def test_runs_unprivileged_with_only_two_capabilities(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    node = dlab.start_pgvip("a", user="pgvip")
    wait_holder(dlab, ["a"])
    assert node.daemon is not None
    status = Path(f"/proc/{node.daemon.pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[0] != "0"
    # CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only
    assert int(fields["CapEff"], 16) == (1 << 12) | (1 << 13)
    assert dlab.stop_pgvip("a") == 0
    assert dlab.holders() == []


def test_missing_privilege_fails_fast_with_one_line(dlab: DaemonLab) -> None:
    node = dlab.node("a")
    node.config_path.write_text(
        '[patroni]\nurl = "http://127.0.0.1:8008"\n[vrrp]\ninterface = "eth0"\n'
        '[rw]\nvip = "192.0.2.50/24"\n'
    )
    result = subprocess.run(
        ["ip", "netns", "exec", node.ns, "setpriv", "--reuid=nobody", "--regid=nogroup",
         "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--",
         PGVIP, "run", "--config", str(node.config_path)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "CAP_NET_ADMIN" in lines[0] and "CAP_NET_RAW" in lines[0]
    assert dlab.holders() == []


def test_sighup_with_an_invalid_config_keeps_the_old_one(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    node = dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    node.config_path.write_text(node.config_path.read_text().replace("vrid = 50", "vrid = 300"))
    assert node.daemon is not None
    node.daemon.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert node.daemon.poll() is None, "an invalid reload must not stop the daemon"
    assert dlab.holders() == ["a"]
    refused = [e for e in node.log_lines() if "reload refused" in e.get("event", "")]
    assert refused and "rw.vrid" in refused[0].get("problems", "")


def test_sighup_retunes_without_dropping_the_vip(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    node = dlab.start_pgvip("a", priority=200)
    wait_holder(dlab, ["a"])
    text = node.config_path.read_text()
    node.config_path.write_text(
        text.replace("priority = 200", "priority = 180").replace(
            "poll_interval = 0.1", "poll_interval = 0.15"
        )
    )
    assert node.daemon is not None
    with HolderSampler(dlab) as sampler:
        node.daemon.send_signal(signal.SIGHUP)
        time.sleep(1.5)
    assert sampler.samples > 10
    assert sampler.max_holders == 1
    assert not any(e.get("event") == "VIP removed" for e in node.log_lines()), (
        "a priority change must not drop the VIP"
    )
    assert any("applied without re-election" in e.get("event", "") for e in node.log_lines())
    # the new priority is on the wire: a peer at 190 now preempts us
    dlab.start_standin("b", primary=200)
    dlab.start_pgvip("b", priority=190)
    wait_holder(dlab, ["b"], timeout=10)


def test_sighup_with_a_structural_change_re_elects(dlab: DaemonLab) -> None:
    dlab.start_standin("a", primary=200)
    node = dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    node.config_path.write_text(
        node.config_path.read_text().replace("advert_int = 20", "advert_int = 25")
    )
    assert node.daemon is not None
    node.daemon.send_signal(signal.SIGHUP)
    wait_for(
        lambda: any("restarting the election" in e.get("event", "") for e in node.log_lines()),
        timeout=5,
    )
    wait_holder(dlab, ["a"], timeout=10)
    assert node.daemon.poll() is None


def test_notify_command_gets_instance_state_priority(dlab: DaemonLab) -> None:
    out = dlab.tmp / "notify.out"
    script = dlab.tmp / "notify.sh"
    script.write_text(f'#!/bin/sh\necho "$1 $2 $3" >> {out}\n')
    script.chmod(0o755)
    a = dlab.start_standin("a", primary=200)
    dlab.start_pgvip("a", notify={"command": str(script)})
    wait_holder(dlab, ["a"])
    a.set_primary(503)
    wait_holder(dlab, [])
    time.sleep(0.5)
    lines = out.read_text().splitlines()
    assert "rw MASTER 200" in lines
    assert lines[-1] == "rw FAULT 200"


def test_unicast_peers(dlab: DaemonLab) -> None:
    a = dlab.start_standin("a", primary=200)
    b = dlab.start_standin("b", primary=503)
    ip_a, ip_b = str(dlab.net.v4("a")), str(dlab.net.v4("b"))
    dlab.start_pgvip("a", vrrp={"unicast_src": ip_a, "unicast_peers": [ip_b]})
    dlab.start_pgvip("b", vrrp={"unicast_src": ip_b, "unicast_peers": [ip_a]})
    wait_holder(dlab, ["a"])
    with HolderSampler(dlab) as sampler:
        a.set_primary(503)
        time.sleep(0.2)
        b.set_primary(200)
        took = wait_holder(dlab, ["b"], timeout=5)
    assert took < 1.5
    assert sampler.max_holders <= 1
    b.wait_log(_takeover_on_priority_zero, "b's takeover on a's priority-0 advert")


def test_ipv6_rw_vip(dlab: DaemonLab) -> None:
    vip6 = "2001:db8:d9::50"
    a = dlab.start_standin("a", primary=200)
    b = dlab.start_standin("b", primary=503)
    dlab.start_pgvip("a", rw={"vip": f"{vip6}/64"})
    dlab.start_pgvip("b", rw={"vip": f"{vip6}/64"})
    wait_for(lambda: dlab.holders(vip6) == ["a"], timeout=10, what="IPv6 VIP on a")
    info = dlab.net.addr_info("a")
    vip = next(i for i in info if i.get("local") == vip6)
    assert not vip.get("tentative"), "an IPv6 VIP must be usable at once (NODAD)"
    a.set_primary(503)
    time.sleep(0.2)
    b.set_primary(200)
    wait_for(lambda: dlab.holders(vip6) == ["b"], timeout=5, what="IPv6 VIP on b")


def test_link_flap_flushes_the_ipv6_vip_and_it_comes_back(dlab: DaemonLab) -> None:
    vip6 = "2001:db8:d9::50"
    dlab.start_standin("a", primary=200)
    node = dlab.start_pgvip("a", rw={"vip": f"{vip6}/64"})
    wait_for(lambda: dlab.holders(vip6) == ["a"], timeout=10, what="IPv6 VIP on a")
    dlab.net.ip("a", "link", "set", "eth0", "down")
    wait_for(lambda: ("MASTER", "FAULT") in node.transitions(), timeout=5, what="a in FAULT")
    # The kernel flushed the IPv6 VIP; pgvip must not put it back on a dead link
    # (it once did: its reconciler saw "MASTER, VIP missing" before the link notification).
    time.sleep(1.0)
    assert dlab.holders(vip6) == []
    reasons = [e.get("reason", "") for e in node.log_lines() if e.get("to") == "FAULT"]
    assert any("interface eth0 is down" in r for r in reasons), reasons
    dlab.net.ip("a", "link", "set", "eth0", "up")
    wait_for(lambda: dlab.holders(vip6) == ["a"], timeout=5, what="IPv6 VIP re-added")
    events = [e.get("event") for e in node.log_lines()]
    assert "interface usable again" in events
    assert not [e for e in node.log_lines() if e.get("event") == "action failed"]


def test_link_down_on_the_holder_hands_the_vip_to_the_peer(dlab: DaemonLab) -> None:
    # Both stand-ins say yes, so the VRRP priority decides and b can take over.
    dlab.start_standin("a", primary=200)
    dlab.start_standin("b", primary=200)
    a = dlab.start_pgvip("a", priority=250)
    dlab.start_pgvip("b", priority=100)
    wait_holder(dlab, ["a"])
    dlab.net.ip("a", "link", "set", "eth0", "down")
    # The kernel keeps IPv4 addresses on a down link; pgvip must drop its copy, or two
    # nodes hold the VIP the moment the link returns.
    wait_holder(dlab, ["b"], timeout=5)
    time.sleep(1.0)
    assert dlab.holders() == ["b"], "a must not hold the VIP while its link is down"
    dlab.net.ip("a", "link", "set", "eth0", "up")
    wait_holder(dlab, ["a"], timeout=5)  # a preempts once it is back
    assert ("MASTER", "FAULT") in a.transitions()
    assert ("FAULT", "BACKUP") in a.transitions()


def test_release_with_the_config_cleans_up_after_kill_9(dlab: DaemonLab) -> None:
    # What the unit's ExecStopPost does: the interface comes from the config file.
    dlab.start_standin("a", primary=200)
    node = dlab.start_pgvip("a")
    wait_holder(dlab, ["a"])
    dlab.stop_pgvip("a", signal.SIGKILL)
    assert dlab.holders() == ["a"], "a killed daemon cannot remove its VIP"
    out = subprocess.run(
        ["ip", "netns", "exec", dlab.net.ns("a"), PGVIP, "release", "--config",
         str(node.config_path)],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"pgvip: released {VIP}" in out.stdout and "on eth0" in out.stdout
    assert dlab.holders() == []


def _restart_gap(dlab: DaemonLab, env: dict[str, str]) -> float:
    """SIGTERM the holder's pgvip, start it again at once, and time the VIP's absence."""
    dlab.stop_pgvip("a")
    gone = time.monotonic()
    assert dlab.holders() == []
    dlab.start_pgvip("a", priority=254, vrrp={"advert_int": 100}, env=env)
    wait_holder(dlab, ["a"], timeout=10)
    return time.monotonic() - gone


def test_a_restart_on_the_holder_takes_the_vip_back_after_skew_time(dlab: DaemonLab) -> None:
    # advert_int 1 s: without the resign record the new run would listen for 3 s first.
    dlab.start_standin("a", primary=200)
    dlab.start_standin("b", primary=503)
    node = dlab.node("a")
    env = {"RUNTIME_DIRECTORY": str(node.workdir)}
    dlab.start_pgvip("a", priority=254, vrrp={"advert_int": 100}, env=env)
    dlab.start_pgvip("b", priority=254, vrrp={"advert_int": 100})
    wait_holder(dlab, ["a"], timeout=10)
    fast = _restart_gap(dlab, env)
    # Start-up (imports, sockets) dominates; the election itself waits ~4 ms.
    assert fast < 2.5, f"VIP back after {fast:.2f}s"
    events = [e.get("event") for e in node.log_lines()]
    assert "previous run resigned moments ago: taking over after Skew_Time if eligible" in events
    assert not list(node.workdir.glob("resigned-*.json")), "the record is read once"
    # Control: without a record directory the same restart listens a Master_Down_Interval.
    slow = _restart_gap(dlab, {"RUNTIME_DIRECTORY": str(node.workdir / "missing")})
    print(f"restart gap: with the resign record {fast:.2f}s, without {slow:.2f}s")
    assert slow > fast + 1.5, f"with record {fast:.2f}s, without {slow:.2f}s"
