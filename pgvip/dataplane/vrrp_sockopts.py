"""Opening the raw protocol-112 sockets VRRP needs: device binding, TTL, the BPF drop filter and
multicast joins, with errors that say which step failed and why.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address

from pgvip.dataplane.privileges import describe_missing_interface
from pgvip.vrrp.packet import IPPROTO_VRRP, VRRP_MCAST_V4, VRRP_MCAST_V6, VRRP_TTL

# Linux values the socket module does not export.
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
SO_ATTACH_FILTER = 26
# Linux: each read carries the socket's running count of packets dropped for a full
# receive buffer, so a flood's losses are counted too (Python has no constant).
SO_RXQ_OVFL = 40
SO_RCVBUFFORCE = 33  # SO_RCVBUF beyond net.core.rmem_max, with CAP_NET_ADMIN
# Room for a burst while the daemon is not scheduled: ~1000 full-size or ~3000 small
# packets, i.e. tens of milliseconds of reading, far below a Master_Down_Interval. The
# default (~200 KiB) overflowed at 14k packets/s in the lab's flood test.
RCVBUF = 1 << 20
VRRP_CHECKSUM_OFFSET = 6  # for IPV6_CHECKSUM: the kernel computes and verifies it

_IP_MREQN = struct.Struct("=4s4si")
_IPV6_MREQ = struct.Struct("=16sI")


class VrrpSocketError(RuntimeError):
    """Opening, sending on or reading a VRRP socket failed; the message says which and why."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def describe_os_error(ifname: str, exc: OSError) -> str:
    """What an OSError on a VRRP socket of `ifname` means, in words an operator can act on."""
    code = exc.errno
    if code in (errno.EPERM, errno.EACCES):
        return "raw socket for VRRP needs CAP_NET_RAW (permission denied)"
    if code in (errno.ENODEV, errno.ENXIO):
        return describe_missing_interface(ifname)
    if code == errno.EADDRNOTAVAIL:
        return "the address is not configured here (or is still tentative during IPv6 DAD)"
    if code == errno.ENETDOWN:
        return f"interface {ifname} is down"
    return exc.strerror or str(exc)


def socket_error(what: str, ifname: str, exc: OSError) -> VrrpSocketError:
    """`what` failed with `exc`, as a VrrpSocketError."""
    return VrrpSocketError(f"{what} failed: {describe_os_error(ifname, exc)}", code=exc.errno)


@contextmanager
def _step(what: str, ifname: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise socket_error(what, ifname, exc) from exc


def _drop_all_input(sock: socket.socket) -> None:
    # A send-only raw socket still matches incoming proto-112 packets to its address; a
    # one-instruction BPF "return 0" keeps it from queueing them (the kernel copies it).
    program = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0))  # BPF_RET|BPF_K
    fprog = struct.pack("@HP", 1, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def raw_socket(family: int, ifname: str) -> socket.socket:
    """A non-blocking raw protocol-112 socket bound to device `ifname`."""
    with _step("opening a raw IP protocol 112 socket", ifname):
        sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_VRRP)
    try:
        sock.setblocking(False)
        with _step(f"binding the VRRP socket to device {ifname}", ifname):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    except BaseException:
        sock.close()
        raise
    return sock


def count_overflows(sock: socket.socket, ifname: str) -> None:
    """A larger receive buffer, and SO_RXQ_OVFL on reads: the count of packets the kernel
    dropped because the buffer was full anyway."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:  # no CAP_NET_ADMIN: as much as net.core.rmem_max allows
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    with _step("requesting the receive-overflow count", ifname):
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)


def open_v4(
    ifname: str, ifindex: int, source: IPv4Address, peers: tuple[IPv4Address, ...]
) -> tuple[socket.socket, socket.socket]:
    """The (tx, rx) sockets of one VRRP instance; one socket does both in unicast mode."""
    opened: list[socket.socket] = []
    try:
        tx = raw_socket(socket.AF_INET, ifname)
        opened.append(tx)
        with _step(f"binding the VRRP socket to {source}", ifname):
            tx.bind((str(source), 0))
        with _step("setting the VRRP TTL to 255", ifname):
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, VRRP_TTL)
        if peers:
            # Everything a peer sends is addressed to our source: one socket does both.
            count_overflows(tx, ifname)
            return tx, tx
        with _step(f"selecting {ifname} for multicast", ifname):
            mreqn = _IP_MREQN.pack(b"\x00" * 4, source.packed, ifindex)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, VRRP_TTL)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            _drop_all_input(tx)
        rx = raw_socket(socket.AF_INET, ifname)
        opened.append(rx)
        with _step(f"binding the VRRP socket to {VRRP_MCAST_V4}", ifname):
            rx.bind((str(VRRP_MCAST_V4), 0))
        with _step(f"joining {VRRP_MCAST_V4} on {ifname}", ifname):
            mreqn = _IP_MREQN.pack(VRRP_MCAST_V4.packed, b"\x00" * 4, ifindex)
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            # Otherwise a raw socket gets every group any socket on the host has joined.
            rx.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        count_overflows(rx, ifname)
        return tx, rx
    except BaseException:
        for sock in opened:
            sock.close()
        raise


def open_v6(
    ifname: str, ifindex: int, source: IPv6Address, unicast: bool
) -> tuple[socket.socket, socket.socket]:
    """The (tx, rx) sockets of one VRRP instance; one socket does both in unicast mode."""
    opened: list[socket.socket] = []
    try:
        tx = raw_socket(socket.AF_INET6, ifname)
        opened.append(tx)
        with _step("setting the VRRP checksum offset", ifname):
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, VRRP_CHECKSUM_OFFSET)
        with _step(f"binding the VRRP socket to {source}", ifname):
            tx.bind((str(source), 0, 0, ifindex))
        with _step("setting the VRRP hop limit to 255", ifname):
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, VRRP_TTL)
        if unicast:
            _enable_recv_info(tx, ifname)
            count_overflows(tx, ifname)
            return tx, tx
        with _step(f"selecting {ifname} for multicast", ifname):
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, VRRP_TTL)
            tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            _drop_all_input(tx)
        rx = raw_socket(socket.AF_INET6, ifname)
        opened.append(rx)
        with _step("setting the VRRP checksum offset", ifname):
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, VRRP_CHECKSUM_OFFSET)
        with _step(f"binding the VRRP socket to {VRRP_MCAST_V6}", ifname):
            rx.bind((str(VRRP_MCAST_V6), 0, 0, ifindex))
        with _step(f"joining {VRRP_MCAST_V6} on {ifname}", ifname):
            mreq = _IPV6_MREQ.pack(VRRP_MCAST_V6.packed, ifindex)
            rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            rx.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        _enable_recv_info(rx, ifname)
        count_overflows(rx, ifname)
        return tx, rx
    except BaseException:
        for sock in opened:
            sock.close()
        raise


def _enable_recv_info(sock: socket.socket, ifname: str) -> None:
    # IPv6 raw reads carry no header: the hop limit and destination come as ancillary data.
    with _step("requesting the hop limit and destination of received packets", ifname):
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
