"""VRRP over real raw sockets between namespaces: multicast and unicast, IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import socket
import threading
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from pgvip.dataplane.privileges import CAP_NET_RAW
from pgvip.dataplane.vrrp_socket import Received, VrrpSocket
from pgvip.dataplane.vrrp_sockopts import VrrpSocketError
from pgvip.vrrp.packet import VRRP_MCAST_V4, VRRP_MCAST_V6, Advert, decode, encode

from .conftest import NetLab, drop_effective_capabilities, run_in_netns, start_in_netns

pytestmark = pytest.mark.integration

WAIT = 5.0


def advert(vrid: int, priority: int, vip: str) -> Advert:
    return Advert(vrid=vrid, priority=priority, max_advert_int=100, addresses=(ip_address(vip),))  # type: ignore[arg-type]


async def recv_or_none(sock: VrrpSocket, timeout: float) -> Received | None:
    try:
        return await asyncio.wait_for(sock.recv(), timeout)
    except TimeoutError:
        return None


def wait_event(event: threading.Event) -> None:
    assert event.wait(WAIT), "the other side never got ready"


async def _in_thread(event: threading.Event) -> None:
    await asyncio.get_running_loop().run_in_executor(None, wait_event, event)


def test_ipv4_multicast_between_two_nodes(netlab: NetLab) -> None:
    a_src, b_src = netlab.v4("a"), netlab.v4("b")
    b_ready, a_sent, b_sent = threading.Event(), threading.Event(), threading.Event()
    a_msg = encode(advert(51, 200, "192.0.2.50"), a_src, VRRP_MCAST_V4)
    b_msg = encode(advert(51, 100, "192.0.2.50"), b_src, VRRP_MCAST_V4)

    async def node_b() -> tuple[Received | None, Advert]:
        async with await VrrpSocket.open("eth0", socket.AF_INET, b_src) as sock:
            b_ready.set()
            got = await recv_or_none(sock, WAIT)
            sock.send(b_msg)
            b_sent.set()
            assert got is not None
            return got, decode(got.payload, got.src, got.dst, ttl=got.ttl)

    async def node_a() -> tuple[Received | None, int, int]:
        async with await VrrpSocket.open("eth0", socket.AF_INET, a_src) as sock:
            await _in_thread(b_ready)
            sock.send(a_msg)
            a_sent.set()
            got = await recv_or_none(sock, WAIT)  # b's answer, never our own advert
            return got, sock.sent, sock.dropped["own"]

    b = start_in_netns(netlab.ns("b"), node_b)
    a_got, a_sent_count, a_own = run_in_netns(netlab.ns("a"), node_a)
    b_got, b_advert = b.result(WAIT)

    assert b_got == Received(a_msg, a_src, VRRP_MCAST_V4, 255)
    assert b_advert == advert(51, 200, "192.0.2.50")
    assert a_got == Received(b_msg, b_src, VRRP_MCAST_V4, 255)
    assert (a_sent_count, a_own) == (1, 0)


def test_own_multicast_looped_back_is_dropped(netlab: NetLab) -> None:
    """With loopback forced on, our own advert reaches our RX socket and is filtered."""
    src = netlab.v4("a")

    async def node_a() -> tuple[Received | None, int]:
        async with await VrrpSocket.open("eth0", socket.AF_INET, src) as sock:
            sock._tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.send(encode(advert(7, 100, "192.0.2.50"), src, VRRP_MCAST_V4))
            got = await recv_or_none(sock, 1.0)
            return got, sock.dropped["own"]

    assert run_in_netns(netlab.ns("a"), node_a) == (None, 1)


def test_ipv4_unicast_accepts_only_peers(netlab: NetLab) -> None:
    a_src, b_src, c_src = netlab.v4("a"), netlab.v4("b"), netlab.v4("c")
    b_ready, c_sent = threading.Event(), threading.Event()
    a_msg = encode(advert(9, 150, "192.0.2.50"), a_src, b_src)

    async def node_b() -> tuple[Received | None, Received | None, int]:
        async with await VrrpSocket.open("eth0", socket.AF_INET, b_src, (a_src,)) as sock:
            assert not sock.multicast
            b_ready.set()
            first = await recv_or_none(sock, WAIT)
            more = await recv_or_none(sock, 0.5)
            return first, more, sock.dropped["not_peer"]

    async def node_c() -> None:
        # c believes b is its peer, but b does not list c.
        async with await VrrpSocket.open("eth0", socket.AF_INET, c_src, (b_src,)) as sock:
            await _in_thread(b_ready)
            sock.send(encode(advert(9, 250, "192.0.2.50"), c_src, b_src))
            c_sent.set()

    async def node_a() -> None:
        async with await VrrpSocket.open("eth0", socket.AF_INET, a_src, [str(b_src)]) as sock:
            await _in_thread(c_sent)
            sock.send(a_msg)

    b = start_in_netns(netlab.ns("b"), node_b)
    c = start_in_netns(netlab.ns("c"), node_c)
    run_in_netns(netlab.ns("a"), node_a)
    c.result(WAIT)
    first, more, not_peer = b.result(WAIT)
    assert first == Received(a_msg, a_src, b_src, 255)
    assert more is None
    assert not_peer == 1


def test_ipv6_multicast_with_kernel_checksum(netlab: NetLab) -> None:
    a_ll, b_ll = netlab.link_local("a"), netlab.link_local("b")
    b_ready = threading.Event()
    good = encode(advert(60, 120, "2001:db8:d9::50"), a_ll, VRRP_MCAST_V6)
    # IPV6_CHECKSUM makes the kernel fill the checksum: send one with it zeroed.
    zeroed = good[:6] + b"\x00\x00" + good[8:]

    async def node_b() -> list[Received | None]:
        async with await VrrpSocket.open("eth0", socket.AF_INET6, b_ll) as sock:
            b_ready.set()
            return [await recv_or_none(sock, WAIT), await recv_or_none(sock, WAIT)]

    async def node_a() -> Received | None:
        async with await VrrpSocket.open("eth0", socket.AF_INET6, a_ll) as sock:
            await _in_thread(b_ready)
            sock.send(zeroed)
            sock.send(good)
            return await recv_or_none(sock, 0.5)

    b = start_in_netns(netlab.ns("b"), node_b)
    own = run_in_netns(netlab.ns("a"), node_a)
    received = b.result(WAIT)
    assert own is None
    for got in received:
        assert got == Received(good, a_ll, VRRP_MCAST_V6, 255)
        assert got is not None
        assert decode(got.payload, got.src, got.dst, ttl=got.ttl).priority == 120


def test_ipv6_unicast_between_link_locals(netlab: NetLab) -> None:
    a_ll, b_ll = netlab.link_local("a"), netlab.link_local("b")
    b_ready = threading.Event()
    msg = encode(advert(61, 130, "2001:db8:d9::50"), a_ll, b_ll)

    async def node_b() -> Received | None:
        async with await VrrpSocket.open("eth0", socket.AF_INET6, b_ll, (a_ll,)) as sock:
            b_ready.set()
            return await recv_or_none(sock, WAIT)

    async def node_a() -> None:
        async with await VrrpSocket.open("eth0", socket.AF_INET6, a_ll, (b_ll,)) as sock:
            await _in_thread(b_ready)
            sock.send(msg)

    b = start_in_netns(netlab.ns("b"), node_b)
    run_in_netns(netlab.ns("a"), node_a)
    assert b.result(WAIT) == Received(msg, a_ll, b_ll, 255)


def test_open_errors_are_specific(netlab: NetLab) -> None:
    async def attempt(ifname: str, family: int, source: str) -> str:
        try:
            sock = await VrrpSocket.open(ifname, family, source)
        except VrrpSocketError as exc:
            return str(exc)
        sock.close()
        return "opened"

    ns = netlab.ns("a")
    assert run_in_netns(ns, attempt, "eth9", socket.AF_INET, "192.0.2.1") == (
        "interface eth9 does not exist (available: lo, eth0)"
    )
    assert run_in_netns(ns, attempt, "eth0", socket.AF_INET, "192.0.2.200") == (
        "binding the VRRP socket to 192.0.2.200 failed: "
        "the address is not configured here (or is still tentative during IPv6 DAD)"
    )
    assert run_in_netns(ns, attempt, "eth0", socket.AF_INET, "192.0.2.1") == "opened"

    async def without_raw() -> str:
        drop_effective_capabilities(CAP_NET_RAW)
        return await attempt("eth0", socket.AF_INET, "192.0.2.1")

    assert run_in_netns(ns, without_raw) == (
        "opening a raw IP protocol 112 socket failed: "
        "raw socket for VRRP needs CAP_NET_RAW (permission denied)"
    )


def test_send_on_a_down_link_raises(netlab: NetLab) -> None:
    async def body() -> str:
        async with await VrrpSocket.open("eth0", socket.AF_INET, netlab.v4("a")) as sock:
            netlab.ip("a", "link", "set", "eth0", "down")
            try:
                sock.send(b"\x31\x01\x64\x01\x00\x64\x00\x00" + IPv4Address("192.0.2.50").packed)
            except VrrpSocketError as exc:
                return str(exc)
            return "sent"

    message = run_in_netns(netlab.ns("a"), body)
    assert message == "sending VRRP on eth0 failed: 224.0.0.18: Network is unreachable"


def test_close_wakes_a_pending_recv(netlab: NetLab) -> None:
    async def body() -> str:
        sock = await VrrpSocket.open("eth0", socket.AF_INET6, netlab.link_local("a"))
        pending = asyncio.ensure_future(sock.recv())
        await asyncio.sleep(0.1)
        sock.close()
        try:
            await asyncio.wait_for(pending, 1)
        except VrrpSocketError as exc:
            return str(exc)
        return "no error"

    assert run_in_netns(netlab.ns("a"), body) == "VRRP socket on eth0 was closed"


def test_family_and_source_accept_plain_values(netlab: NetLab) -> None:
    async def body() -> tuple[object, object]:
        async with await VrrpSocket.open("eth0", 6, str(netlab.link_local("a"))) as sock:
            return sock.source, sock.group

    source, group = run_in_netns(netlab.ns("a"), body)
    assert isinstance(source, IPv6Address) and group == VRRP_MCAST_V6
