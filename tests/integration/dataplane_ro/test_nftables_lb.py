"""The nftables RO balancer for real, in a director namespace: split, removal, readback, clear,
atomic replacement, and the DR real-server setup (which needs no IPVS)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface

import pytest

from pgvip.dataplane.addresses import PGVIP_IFA_PROTO, AddressManager
from pgvip.dataplane.balancer import LoadBalancerError, RealServer, VirtualService
from pgvip.dataplane.balancer.nft_ruleset import build_document, normalise
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer
from pgvip.dataplane.balancer.realserver import setup_real_server, teardown_real_server

from .conftest import PORT, VIP4, VIP6, RoLab, service

pytestmark = pytest.mark.integration


async def test_round_robin_splits_new_connections(ro_lab: RoLab, lb: NftablesLoadBalancer) -> None:
    desired = service(ro_lab, ("b1", 1), ("b2", 1))
    assert await lb.apply(desired) is True
    seen = ro_lab.connect("cli", VIP4, 100)
    assert set(seen) == {"b1", "b2"}, seen
    assert seen["b1"] >= 40 and seen["b2"] >= 40, seen
    assert await lb.actual() == desired
    assert await lb.apply(desired) is False  # idempotent: nothing rewritten


async def test_weights_become_slots(ro_lab: RoLab, lb: NftablesLoadBalancer) -> None:
    await lb.apply(service(ro_lab, ("b1", 3), ("b2", 1), scheduler="wrr"))
    seen = ro_lab.connect("cli", VIP4, 100)
    assert seen == {"b1": 75, "b2": 25}


async def test_removed_or_drained_backend_gets_no_new_connections(
    ro_lab: RoLab, lb: NftablesLoadBalancer
) -> None:
    await lb.apply(service(ro_lab, ("b1", 1), ("b2", 1)))
    assert set(ro_lab.connect("cli", VIP4, 10)) == {"b1", "b2"}
    assert await lb.apply(service(ro_lab, ("b1", 1))) is True
    assert ro_lab.connect("cli", VIP4, 20) == {"b1": 20}
    draining = service(ro_lab, ("b1", 1), ("b2", 0))
    assert await lb.apply(draining) is False  # weight 0 is already the absence of slots
    assert ro_lab.connect("cli", VIP4, 20) == {"b1": 20}
    assert await lb.actual() == normalise(draining) == service(ro_lab, ("b1", 1))


async def test_clients_on_the_director_itself_are_balanced(
    ro_lab: RoLab, lb: NftablesLoadBalancer
) -> None:
    await lb.apply(service(ro_lab, ("b1", 1), ("b2", 1)))
    assert ro_lab.connect("dir", VIP4, 10) == {"b1": 5, "b2": 5}


async def test_no_backend_refuses_at_once(ro_lab: RoLab, lb: NftablesLoadBalancer) -> None:
    await lb.apply(service(ro_lab))
    start = time.monotonic()
    seen = ro_lab.connect("cli", VIP4, 3)
    assert time.monotonic() - start < 3
    assert list(seen) and all(k.startswith("error:ConnectionRefusedError") for k in seen), seen


async def test_ipv6_vip(ro_lab: RoLab, lb: NftablesLoadBalancer) -> None:
    desired = service(ro_lab, ("b1", 1), ("b2", 1), v6=True)
    await lb.apply(desired)
    assert ro_lab.connect("cli", VIP6, 20) == {"b1": 10, "b2": 10}
    assert await lb.actual() == desired
    assert [t["family"] for t in ro_lab.nft_tables("dir") if t["name"] == "pgvip"] == ["ip6"]
    assert ro_lab.sysctl("dir", "net/ipv6/conf/all/forwarding") == "1"


async def test_clear_leaves_no_table_and_restores_sysctls(ro_lab: RoLab) -> None:
    lb = NftablesLoadBalancer(interface="eth0", netns=ro_lab.ns("dir"))
    before = ro_lab.sysctl("dir", "net/ipv4/ip_forward")
    assert before == "0"
    await lb.apply(service(ro_lab, ("b1", 1)))
    assert ro_lab.sysctl("dir", "net/ipv4/ip_forward") == "1"
    assert ro_lab.sysctl("dir", "net/ipv4/conf/all/send_redirects") == "0"
    assert ro_lab.sysctl("dir", "net/ipv4/conf/eth0/send_redirects") == "0"
    await lb.clear()
    assert [t for t in ro_lab.nft_tables("dir") if t["name"] == "pgvip"] == []
    assert await lb.actual() is None
    assert ro_lab.sysctl("dir", "net/ipv4/ip_forward") == before
    assert ro_lab.sysctl("dir", "net/ipv4/conf/eth0/send_redirects") == "1"
    await lb.clear()  # idempotent


async def test_a_rejected_document_leaves_the_old_table(
    ro_lab: RoLab, lb: NftablesLoadBalancer
) -> None:
    good = service(ro_lab, ("b1", 1), ("b2", 1))
    await lb.apply(good)
    broken = build_document(service(ro_lab, ("b1", 1)))
    broken["nftables"][-1]["add"]["rule"]["chain"] = "forward"  # no such chain
    with pytest.raises(LoadBalancerError, match="No such file or directory"):
        await lb._nft(["-j", "-f", "-"], stdin=json.dumps(broken))
    assert await lb.actual() == good
    assert set(ro_lab.connect("cli", VIP4, 4)) == {"b1", "b2"}


async def test_apply_heals_a_hand_edited_table(ro_lab: RoLab, lb: NftablesLoadBalancer) -> None:
    desired = service(ro_lab, ("b1", 1), ("b2", 1))
    await lb.apply(desired)
    ro_lab.exec("dir", "nft", "flush", "chain", "ip", "pgvip", "postrouting")
    with pytest.raises(LoadBalancerError, match="expected 1 rule in postrouting"):
        await lb.actual()
    assert await lb.apply(desired) is True
    assert await lb.actual() == desired
    assert set(ro_lab.connect("cli", VIP4, 4)) == {"b1", "b2"}


async def test_dr_real_server_setup(ro_lab: RoLab) -> None:
    ns = ro_lab.ns("b1")
    vip = IPv4Address("198.51.100.49")
    assert PGVIP_IFA_PROTO == 0x9A
    assert await setup_real_server(vip, netns=ns, interface="eth0") is True
    assert await setup_real_server(vip, netns=ns, interface="eth0") is False
    async with AddressManager("lo", ns) as lo:
        assert IPv4Interface(f"{vip}/32") in await lo.owned()
    assert ro_lab.sysctl("b1", "net/ipv4/conf/all/arp_ignore") == "1"
    assert ro_lab.sysctl("b1", "net/ipv4/conf/all/arp_announce") == "2"
    assert ro_lab.sysctl("b1", "net/ipv4/conf/eth0/arp_ignore") == "1"
    # The VIP on lo is not announced: the client cannot resolve it to b1.
    seen = ro_lab.exec("cli", "ping", "-c1", "-W1", str(vip), check=False)
    assert seen.returncode != 0
    assert await teardown_real_server(vip, netns=ns) is True
    assert await teardown_real_server(vip, netns=ns) is False
    async with AddressManager("lo", ns) as lo:
        assert await lo.owned() == set()


# A server on the director itself that echoes each line back, and a client that opens ONE
# connection, says "open", then echoes a line through it each time it reads one on stdin.
ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(8)
print("ready", flush=True)
while True:  # one connection at a time, each closed when its client closes
    conn, _ = s.accept()
    while data := conn.recv(64):
        conn.sendall(data)
    conn.close()
"""
HOLDING_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
print("open", flush=True)
for line in sys.stdin:
    try:
        c.sendall(line.encode())
        print(c.recv(64).decode().strip() or "closed", flush=True)
    except OSError as exc:
        print(f"error:{type(exc).__name__}", flush=True)
"""


class HeldConnection:
    """ECHO_SERVER in namespace `host` on `port`, and (after `open()`) HOLDING_CLIENT's one
    connection from the client namespace to the RO VIP; both killed by PID on exit."""

    def __init__(self, lab: RoLab, host: str, port: int) -> None:
        self.lab, self.host, self.port = lab, host, port
        self.server: subprocess.Popen[str] | None = None
        self.client: subprocess.Popen[str] | None = None

    def _spawn(self, host: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns(host), sys.executable, "-c", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def __enter__(self) -> HeldConnection:
        self.server = self._spawn(self.host, ECHO_SERVER, str(self.port))
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"
        return self

    def open(self) -> None:
        self.client = self._spawn("cli", HOLDING_CLIENT, str(VIP4), str(PORT))
        assert self.client.stdout is not None and self.client.stdout.readline().strip() == "open"

    def one_closed(self) -> None:
        """One more connection that echoes once and closes (its conntrack entry: TIME_WAIT)."""
        short = self._spawn("cli", HOLDING_CLIENT, str(VIP4), str(PORT))
        out, _ = short.communicate("once\n", timeout=10)
        assert out.split() == ["open", "once"], out

    def echo(self, word: str) -> str:
        assert self.client is not None and self.client.stdin and self.client.stdout
        self.client.stdin.write(word + "\n")
        self.client.stdin.flush()
        return self.client.stdout.readline().strip()

    def __exit__(self, *exc: object) -> None:
        for proc in (self.client, self.server):
            if proc is not None:
                proc.kill()  # by PID: our own children
                proc.communicate(timeout=10)


async def test_a_connection_the_director_accepted_before_the_table_survives_it(
    ro_lab: RoLab, lb: NftablesLoadBalancer
) -> None:
    """The VIP is up before the first apply (the director warms up its probes), so the
    director's own PostgreSQL may accept a connection in that gap. The table arriving must not
    reset it: the input guard refuses only NEW connections (a CI failure, 2026-11-26)."""
    with HeldConnection(ro_lab, "dir", PORT) as held:
        held.open()
        assert held.echo("before") == "before"
        await lb.apply(service(ro_lab, ("b1", 1), ("b2", 1)))
        assert held.echo("with-backends") == "with-backends"
        await lb.apply(service(ro_lab))  # no backend: the guard is the only rule left
        assert held.echo("no-backend") == "no-backend"
        # ...while new connections are still balanced away from the director, or refused.
        seen = ro_lab.connect("cli", VIP4, 2)
        assert all(k.startswith("error:ConnectionRefusedError") for k in seen), seen


async def test_ipvs_one_armed_nat_masquerade_table(ro_lab: RoLab) -> None:
    """The nft half of IPVS one-armed NAT, for real in the director namespace (IPVS itself
    runs in the qemu guest: tests/integration/ipvs_vm)."""
    from pgvip.dataplane.balancer.ipvs_masquerade import TABLE, IpvsMasquerade
    from pgvip.dataplane.balancer.nftables import find_nft

    masq = IpvsMasquerade(find_nft(), netns=ro_lab.ns("dir"))
    assert await masq.current() is None
    assert await masq.remove() is False
    assert await masq.ensure(VIP4, PORT) is True
    assert await masq.current() == {(VIP4, PORT)}
    assert await masq.ensure(VIP4, PORT) is False  # read back: nothing to do
    listing = ro_lab.exec("dir", "nft", "list", "table", "inet", TABLE).stdout
    assert f"ct original ip daddr {VIP4} ct original proto-dst {PORT} masquerade" in listing
    assert "hook postrouting" in listing
    assert await masq.ensure(VIP6, PORT) is True  # replaced whole: only the new one is left
    assert await masq.current() == {(VIP6, PORT)}
    assert await masq.remove() is True
    assert await masq.current() is None
    with pytest.raises(LoadBalancerError, match="needs the 'nft' command"):
        await IpvsMasquerade(None).ensure(VIP4, PORT)
    assert await IpvsMasquerade(None).current() is None


async def test_drain_keeps_established_connections_until_the_backend_leaves(
    ro_lab: RoLab, lb: NftablesLoadBalancer
) -> None:
    """ro.drain_timeout on nftables: at weight 0 a backend's established connection flows on
    while new ones go elsewhere; when the backend leaves the set (after the drain), its
    connection is ended (a reset, so the client reconnects), not kept for days."""
    echo_port = PORT + 1
    b1, b2 = RealServer(ro_lab.v4("b1"), PORT, 1), RealServer(ro_lab.v4("b2"), echo_port, 1)
    with HeldConnection(ro_lab, "b2", echo_port) as held:
        await lb.apply(VirtualService(VIP4, PORT, (b2,)))
        held.one_closed()  # over before the drain: nothing to end, and it must not be cut
        held.open()
        assert held.echo("serving") == "serving"
        await lb.apply(VirtualService(VIP4, PORT, (b1, RealServer(b2.address, echo_port, 0))))
        assert held.echo("draining") == "draining"  # established: flows on at weight 0
        assert ro_lab.connect("cli", VIP4, 6) == {"b1": 6}  # new: elsewhere
        assert lb.cut == 0
        await lb.apply(VirtualService(VIP4, PORT, (b1,)))  # the drain is over: b2 leaves
        assert lb.cut == 1  # the held connection only, not the closed one (TIME_WAIT)
        started = time.monotonic()
        assert held.echo("after") in ("error:ConnectionResetError", "closed")
        assert time.monotonic() - started < 2.5  # a reset, not the client's 3 s timeout
        assert ro_lab.connect("cli", VIP4, 4) == {"b1": 4}
        await lb.apply(VirtualService(VIP4, PORT, (b1,)))
        assert lb.cut == 1  # only a departure cuts, not every apply
