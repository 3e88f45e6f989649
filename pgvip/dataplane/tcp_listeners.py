"""Which TCP ports this network namespace listens on, from the kernel's socket table
(sock_diag over netlink): the RO director's free check of its own PostgreSQL.

A connect to PostgreSQL's port makes the postmaster fork a backend (about 3 ms of CPU), so
the port watch connects only every `ro.port_check_interval`. Asking the kernel whether a
LISTEN socket is bound to the port costs PostgreSQL nothing: one netlink dump of the
namespace's listening TCP sockets (a handful), so the director can ask every 20 ms and see
its own PostgreSQL's postmaster exit within that. The request and the parsing are pure
functions; `listening_ports` does the one round trip.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator

__all__ = [
    "Listener",
    "ListenersError",
    "dump_request",
    "listening_ports",
    "parse_dump",
    "serves",
]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10

_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid:
# sport, dport (network order), src[16], dst[16], interface, cookie[2].
_REQ = struct.Struct("=BBBxI2s2s16s16sI8s")
# inet_diag_msg: family, state, timer, retrans, then the sockid as above, expires, rqueue,
# wqueue, uid, inode.
_MSG = struct.Struct("=BBBB")
_MSG_ID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order)

Listener = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]  # (address, port)


class ListenersError(OSError):
    """The kernel's socket table could not be read (netlink refused or answered garbage)."""


def dump_request(family: int, seq: int = 1) -> bytes:
    """The netlink message asking for every listening TCP socket of `family`."""
    body = _REQ.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN,
                     b"\0\0", b"\0\0", b"\0" * 16, b"\0" * 16, 0, b"\0" * 8)  # fmt: skip
    header = _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY,
                         NLM_F_REQUEST | NLM_F_DUMP, seq, 0)  # fmt: skip
    return header + body


def parse_dump(data: bytes) -> tuple[list[Listener], bool]:
    """The listeners in one netlink datagram, and whether the dump ended in it.

    Raises ListenersError for a netlink error or a truncated message."""
    found: list[Listener] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            raise ListenersError(f"sock_diag: truncated netlink message ({length} bytes)")
        body = offset + _NLMSG.size
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, body)
            if errno == 0:  # an ACK, not an error
                return found, True
            raise ListenersError(-errno, f"sock_diag: {os.strerror(-errno)}")
        if kind == SOCK_DIAG_BY_FAMILY:
            if length < _NLMSG.size + _MSG.size + _MSG_ID.size:
                raise ListenersError(f"sock_diag: short inet_diag_msg ({length} bytes)")
            family, state = data[body], data[body + 1]
            sport, _dport, src, _dst = _MSG_ID.unpack_from(data, body + _MSG.size)
            if state == TCP_LISTEN:
                found.append((_address(family, src), sport))
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return found, False


def _address(family: int, raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    return ipaddress.IPv6Address(raw)


def serves(
    listeners: Iterable[Listener],
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
) -> bool:
    """True if one of `listeners` accepts connections to address:port: bound to it, or to
    the wildcard of its family (an IPv6 wildcard socket also takes IPv4, unless v6only,
    which the dump does not say: counted as serving; the connect check confirms a "no")."""
    for bound, bound_port in listeners:
        if bound_port != port:
            continue
        if bound == address or bound.is_unspecified:
            return True
    return False


def listening_ports(families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
                    *, timeout: float = 0.5) -> list[Listener]:  # fmt: skip
    """Every listening TCP socket of this network namespace, of the given families.

    Blocking, but the kernel answers a dump of a few sockets at once (tens of microseconds).
    Raises ListenersError if netlink fails."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
            sock.settimeout(timeout)
            found: list[Listener] = []
            for seq, family in enumerate(families, start=1):
                sock.send(dump_request(family, seq))
                found.extend(_receive(sock))
            return found
    except ListenersError:
        raise
    except OSError as exc:
        raise ListenersError(exc.errno, f"sock_diag: {exc.strerror or exc}") from exc


def _receive(sock: socket.socket) -> Iterator[Listener]:
    while True:
        part, done = parse_dump(sock.recv(65536))
        yield from part
        if done:
            return
