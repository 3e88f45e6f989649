"""The kernel's table of listening TCP sockets (pgvip.dataplane.tcp_listeners): the codec on
crafted netlink bytes, and one real dump of this namespace (no root needed)."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from pgvip.dataplane.tcp_listeners import (
    NLMSG_DONE,
    NLMSG_ERROR,
    SOCK_DIAG_BY_FAMILY,
    TCP_LISTEN,
    ListenersError,
    dump_request,
    listening_ports,
    parse_dump,
    serves,
)


def nlmsg(kind: int, body: bytes) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body
    return data + b"\0" * (-len(data) % 4)


def diag_msg(family: int, state: int, address: str, port: int) -> bytes:
    raw = ip_address(address).packed.ljust(16, b"\0")
    sockid = struct.pack("!HH16s16s", port, 0, raw, b"\0" * 16) + b"\0" * 12
    return bytes([family, state, 0, 0]) + sockid + b"\0" * 20


def test_the_request_asks_a_dump_of_listening_tcp_sockets() -> None:
    req = dump_request(socket.AF_INET6, seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, kind, seq) == (len(req), SOCK_DIAG_BY_FAMILY, 7) and length == 16 + 56
    assert flags & 0x300 == 0x300  # NLM_F_DUMP
    family, proto, _ext, states = struct.unpack_from("=BBBxI", req, 16)
    assert (family, proto, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 1 << TCP_LISTEN)


def test_listeners_and_the_end_of_the_dump_are_parsed() -> None:
    data = (
        nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(socket.AF_INET, TCP_LISTEN, "10.0.0.1", 5432))
        + nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(socket.AF_INET6, TCP_LISTEN, "::", 8008))
        + nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(socket.AF_INET, 1, "10.0.0.1", 40000))  # estab.
    )
    found, done = parse_dump(data)
    assert found == [(IPv4Address("10.0.0.1"), 5432), (IPv6Address("::"), 8008)] and not done
    assert parse_dump(data + nlmsg(NLMSG_DONE, b"\0" * 4)) == (found, True)


def test_a_netlink_error_and_a_truncated_message_raise() -> None:
    with pytest.raises(ListenersError, match="sock_diag: "):
        parse_dump(nlmsg(NLMSG_ERROR, struct.pack("=i", -13) + b"\0" * 16))
    assert parse_dump(nlmsg(NLMSG_ERROR, struct.pack("=i", 0) + b"\0" * 16)) == ([], True)
    whole = nlmsg(SOCK_DIAG_BY_FAMILY, diag_msg(socket.AF_INET, TCP_LISTEN, "10.0.0.1", 1))
    with pytest.raises(ListenersError, match="truncated"):
        parse_dump(whole[:40])
    with pytest.raises(ListenersError, match="short"):
        parse_dump(nlmsg(SOCK_DIAG_BY_FAMILY, b"\0" * 8))


def test_a_wildcard_listener_serves_every_address_of_its_port_only() -> None:
    listeners = [(IPv4Address("0.0.0.0"), 5432), (IPv4Address("10.0.0.2"), 6432)]
    assert serves(listeners, IPv4Address("10.0.0.9"), 5432)
    assert serves(listeners, IPv4Address("10.0.0.2"), 6432)
    assert not serves(listeners, IPv4Address("10.0.0.3"), 6432)
    assert not serves(listeners, IPv4Address("10.0.0.2"), 5433)


def test_a_real_dump_shows_a_listener_until_it_closes() -> None:
    v4 = socket.socket()
    v4.bind(("127.0.0.1", 0))
    v4.listen()
    v6 = socket.socket(socket.AF_INET6)
    v6.bind(("::1", 0))
    v6.listen()
    bound = socket.socket()  # bound but not listening: no listener
    bound.bind(("127.0.0.1", 0))
    p4, p6, pb = v4.getsockname()[1], v6.getsockname()[1], bound.getsockname()[1]
    try:
        found = listening_ports()
        assert (IPv4Address("127.0.0.1"), p4) in found and (IPv6Address("::1"), p6) in found
        assert not serves(found, IPv4Address("127.0.0.1"), pb)
        v4.close()
        assert not serves(listening_ports(), IPv4Address("127.0.0.1"), p4)
    finally:
        for s in (v4, v6, bound):
            s.close()
