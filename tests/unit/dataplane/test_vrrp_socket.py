"""The pure side of the VRRP socket: parsing raw reads, filtering, and recv() over a socketpair."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest

from pgvip.dataplane.vrrp_socket import (
    Received,
    VrrpSocket,
    drop_reason,
    parse_v4,
    parse_v6,
)
from pgvip.dataplane.vrrp_sockopts import VrrpSocketError
from pgvip.vrrp.packet import VRRP_MCAST_V4, VRRP_MCAST_V6, VrrpPacketError

SRC = IPv4Address("192.0.2.1")
PEER = IPv4Address("192.0.2.2")
OTHER = IPv4Address("192.0.2.3")
PAYLOAD = bytes.fromhex("3133c80100640000c0000232")  # a VRRPv3 advert's shape


def ipv4_datagram(src: IPv4Address, dst: IPv4Address, payload: bytes, ttl: int = 255) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, 112, 0, src.packed, dst.packed
    )
    return header + payload


def test_parse_v4_strips_the_ip_header() -> None:
    got = parse_v4(ipv4_datagram(PEER, VRRP_MCAST_V4, PAYLOAD, ttl=254))
    assert got == Received(PAYLOAD, PEER, VRRP_MCAST_V4, 254)


def test_parse_v4_rejects_garbage() -> None:
    with pytest.raises(VrrpPacketError) as info:
        parse_v4(b"\x45\x00")
    assert info.value.reason == "truncated"


def test_parse_v6_reads_hop_limit_and_destination_from_ancillary_data() -> None:
    ancdata = [
        (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("=i", 255)),
        (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack("=16sI", VRRP_MCAST_V6.packed, 2)),
    ]
    got = parse_v6(PAYLOAD, ancdata, ("fe80::1%eth0", 0, 0, 2), IPv6Address("ff02::99"))
    assert got == Received(PAYLOAD, IPv6Address("fe80::1"), VRRP_MCAST_V6, 255)


def test_parse_v6_without_ancillary_data_uses_the_default_destination() -> None:
    got = parse_v6(PAYLOAD, [], ("2001:db8::1", 0, 0, 0), VRRP_MCAST_V6)
    assert got == Received(PAYLOAD, IPv6Address("2001:db8::1"), VRRP_MCAST_V6, None)


def test_drop_reason() -> None:
    assert drop_reason(SRC, SRC, frozenset()) == "own"
    assert drop_reason(PEER, SRC, frozenset()) is None  # multicast: anyone on the LAN
    assert drop_reason(PEER, SRC, frozenset({PEER})) is None
    assert drop_reason(OTHER, SRC, frozenset({PEER})) == "not_peer"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    writer, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.setblocking(False)
    yield writer, reader
    writer.close()
    reader.close()


def fake_socket(reader: socket.socket, peers: tuple[IPv4Address, ...] = ()) -> VrrpSocket:
    # The reads go through the real recvmsg/add_reader path; only the socket type differs.
    return VrrpSocket(
        ifname="eth0", ifindex=2, source=SRC, unicast_peers=peers, tx=reader, rx=reader
    )


async def test_recv_skips_own_malformed_and_non_peer_messages(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    writer, reader = pair
    sock = fake_socket(reader, peers=(PEER,))
    assert not sock.multicast and sock.group == VRRP_MCAST_V4 and sock.family == socket.AF_INET

    async def feed() -> None:
        await asyncio.sleep(0.05)  # recv() is already waiting on the reader
        writer.send(ipv4_datagram(SRC, PEER, PAYLOAD))  # our own
        writer.send(b"\x45\x00\x00")  # truncated
        writer.send(ipv4_datagram(OTHER, SRC, PAYLOAD))  # not a peer
        writer.send(ipv4_datagram(PEER, SRC, PAYLOAD))

    feeder = asyncio.create_task(feed())
    got = await asyncio.wait_for(sock.recv(), 2)
    await feeder
    assert got == Received(PAYLOAD, PEER, SRC, 255)
    assert sock.received == 1
    assert dict(sock.dropped) == {"own": 1, "truncated": 1, "not_peer": 1}


async def test_close_wakes_a_waiting_recv(pair: tuple[socket.socket, socket.socket]) -> None:
    _, reader = pair
    sock = fake_socket(reader)
    pending = asyncio.create_task(sock.recv())
    await asyncio.sleep(0.02)
    sock.close()
    with pytest.raises(VrrpSocketError, match="VRRP socket on eth0 was closed"):
        await asyncio.wait_for(pending, 1)
    assert sock.closed
    with pytest.raises(VrrpSocketError, match="is closed"):
        await sock.recv()
    with pytest.raises(VrrpSocketError, match="is closed"):
        sock.send(PAYLOAD)
    sock.close()  # idempotent


async def test_only_one_recv_may_wait(pair: tuple[socket.socket, socket.socket]) -> None:
    _, reader = pair
    sock = fake_socket(reader)
    first = asyncio.create_task(sock.recv())
    await asyncio.sleep(0.02)
    with pytest.raises(RuntimeError, match="already waiting"):
        await sock.recv()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    sock.close()


@pytest.mark.parametrize(
    ("family", "source", "peers", "message"),
    [
        (socket.AF_INET, "2001:db8::1", (), "is not an IPv4 address"),
        (socket.AF_INET6, "192.0.2.1", (), "is not an IPv6 address"),
        (socket.AF_INET, "224.0.0.18", (), "must be a unicast address"),
        (socket.AF_INET, "0.0.0.0", (), "must be a unicast address"),
        (socket.AF_INET, "192.0.2.1", ("2001:db8::2",), "is not a unicast IPv4 address"),
        (socket.AF_INET, "192.0.2.1", ("192.0.2.1",), "is our own source address"),
        (socket.AF_UNIX, "192.0.2.1", (), "family must be"),
    ],
)
async def test_open_checks_its_arguments_first(
    family: int, source: str, peers: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await VrrpSocket.open("eth0", family, source, peers)
