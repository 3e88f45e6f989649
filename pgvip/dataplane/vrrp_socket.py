"""Raw IP protocol-112 sockets carrying VRRPv3 on one interface, multicast or to unicast peers.

Bytes in and out only (the codec is pgvip.vrrp.packet). Multicast needs two sockets: a raw
socket bound to our unicast source never sees the group's traffic, so a second one joins it;
`vrrp_sockopts` opens them.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Any, cast

from pgvip.dataplane.privileges import describe_missing_interface
from pgvip.dataplane.vrrp_sockopts import (
    SO_RXQ_OVFL,
    VrrpSocketError,
    describe_os_error,
    open_v4,
    open_v6,
    socket_error,
)
from pgvip.vrrp.packet import VRRP_MCAST_V4, VRRP_MCAST_V6, VrrpPacketError, parse_ipv4_datagram

IPAddress = IPv4Address | IPv6Address

_BUFSIZE = 8192  # 60-byte IPv4 header + 8 + 255 * 16 address bytes fits with room to spare
# hop limit + in6_pktinfo + the overflow count
_ANCBUFSIZE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(20) + socket.CMSG_SPACE(4)
_IN6_PKTINFO = struct.Struct("=16sI")
_RX_BATCH = 16  # packets dropped here between two yields to the event loop


@dataclass(frozen=True)
class Received:
    """One VRRP message as read from the wire (the IP header already stripped)."""

    payload: bytes
    src: IPAddress
    dst: IPAddress
    ttl: int | None  # IPv4 TTL or IPv6 hop limit; RFC 5798 requires 255


def _normalise_family(family: int) -> int:
    if family in (socket.AF_INET, 4):
        return 4
    if family in (socket.AF_INET6, 6):
        return 6
    raise ValueError(f"family must be socket.AF_INET or socket.AF_INET6, got {family!r}")


def _strip_scope(host: str) -> str:
    return host.split("%", 1)[0]


def _host(address: Any) -> str:
    """The sender as recvmsg reported it, for a log line (raw sockets give (host, 0))."""
    if isinstance(address, tuple) and address:
        return _strip_scope(str(address[0]))
    return "?"


# -- pure parts of receiving ---------------------------------------------------------------


def parse_v4(datagram: bytes) -> Received:
    """A Received from an IPv4 raw read (which starts with the IP header)."""
    src, dst, ttl, payload = parse_ipv4_datagram(datagram)
    return Received(payload, src, dst, ttl)


def parse_v6(
    data: bytes,
    ancdata: Iterable[tuple[int, int, bytes]],
    address: tuple[Any, ...],
    default_dst: IPv6Address,
) -> Received:
    """A Received from an IPv6 recvmsg: the hop limit and destination come as ancillary data."""
    ttl: int | None = None
    dst = default_dst
    for level, kind, value in ancdata:
        if level != socket.IPPROTO_IPV6:
            continue
        if kind == socket.IPV6_HOPLIMIT and len(value) >= 4:
            ttl = struct.unpack_from("=i", value)[0]
        elif kind == socket.IPV6_PKTINFO and len(value) >= _IN6_PKTINFO.size:
            dst = IPv6Address(_IN6_PKTINFO.unpack_from(value)[0])
    src = IPv6Address(_strip_scope(address[0]))
    return Received(bytes(data), src, dst, ttl)


def overflow_count(ancdata: Iterable[tuple[int, int, bytes]]) -> int | None:
    """The socket's running count of packets dropped on a full buffer (SO_RXQ_OVFL), if any."""
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
            return int(struct.unpack_from("=I", value)[0])
    return None


def drop_reason(src: IPAddress, source: IPAddress, peers: frozenset[IPAddress]) -> str | None:
    """Why a message from `src` is not for us ("own", "not_peer"), or None to accept it."""
    if src == source:
        return "own"
    if peers and src not in peers:
        return "not_peer"
    return None


# -- the socket ----------------------------------------------------------------------------


class VrrpSocket:
    """VRRP transport for one (interface, family): `send()` bytes, `await recv()` messages.

    Create with `await VrrpSocket.open(...)`. Own packets, and in unicast mode packets from
    addresses that are not peers, are dropped and counted in `dropped` (by reason, as are
    malformed IP headers by their VrrpPacketError reason, and packets the kernel dropped
    because the receive buffer was full, as "overflow"); `on_drop(reason, src, detail, n)`,
    if set, hears of each (the daemon counts them in its metrics).
    """

    def __init__(
        self,
        *,
        ifname: str,
        ifindex: int,
        source: IPAddress,
        unicast_peers: tuple[IPAddress, ...],
        tx: socket.socket,
        rx: socket.socket,
    ) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.source = source
        self.unicast_peers = unicast_peers
        self._peer_set = frozenset(unicast_peers)
        self._tx = tx
        self._rx = rx
        self._rx_fd = rx.fileno()
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._waiter_loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0
        self.received = 0
        self.dropped: Counter[str] = Counter()
        self.on_drop: Callable[[str, object, str, int], None] | None = None
        self._overflows = 0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.source.version == 4 else socket.AF_INET6

    @property
    def group(self) -> IPAddress:
        return VRRP_MCAST_V4 if self.source.version == 4 else VRRP_MCAST_V6

    @property
    def multicast(self) -> bool:
        return not self.unicast_peers

    @property
    def closed(self) -> bool:
        return self._closed

    @classmethod
    async def open(
        cls,
        ifname: str,
        family: int,
        source: IPAddress | str,
        unicast_peers: Iterable[IPAddress | str] = (),
    ) -> VrrpSocket:
        """Open the sockets in the calling thread's network namespace.

        `source` is our address on `ifname` (for IPv6 the link-local one, RFC 5798 §5.1.2.1).
        With `unicast_peers`, adverts go to each peer and only peers are listened to.
        """
        version = _normalise_family(family)
        src = ipaddress.ip_address(source)
        peers = tuple(dict.fromkeys(ipaddress.ip_address(p) for p in unicast_peers))
        if src.version != version:
            raise ValueError(f"source {src} is not an IPv{version} address")
        if src.is_multicast or src.is_unspecified:
            raise ValueError(f"source must be a unicast address of {ifname}, got {src}")
        for peer in peers:
            if peer.version != version or peer.is_multicast or peer.is_unspecified:
                raise ValueError(f"unicast peer {peer} is not a unicast IPv{version} address")
            if peer == src:
                raise ValueError(f"unicast peer {peer} is our own source address")
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError:
            # if_nametoindex() reports a missing name without an errno.
            raise VrrpSocketError(describe_missing_interface(ifname), code=errno.ENODEV) from None
        if isinstance(src, IPv4Address):
            v4peers = tuple(p for p in peers if isinstance(p, IPv4Address))
            tx, rx = open_v4(ifname, ifindex, src, v4peers)
        else:
            tx, rx = open_v6(ifname, ifindex, src, bool(peers))
        return cls(ifname=ifname, ifindex=ifindex, source=src, unicast_peers=peers, tx=tx, rx=rx)

    async def __aenter__(self) -> VrrpSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def _destination(self, dst: IPAddress) -> tuple[Any, ...]:
        if dst.version == 4:
            return (str(dst), 0)
        return (str(dst), 0, 0, self.ifindex)

    def send(self, payload: bytes) -> None:
        """Send one VRRP message to the group, or to every unicast peer."""
        if self._closed:
            raise VrrpSocketError(f"VRRP socket on {self.ifname} is closed")
        failures = []
        code = None
        for dst in self.unicast_peers or (self.group,):
            try:
                self._tx.sendto(payload, self._destination(dst))
            except OSError as exc:
                code = exc.errno
                failures.append(f"{dst}: {describe_os_error(self.ifname, exc)}")
            else:
                self.sent += 1
        if failures:
            raise VrrpSocketError(
                f"sending VRRP on {self.ifname} failed: " + "; ".join(failures), code=code
            )

    def send_to(self, payload: bytes, dst: IPAddress) -> None:
        """Send one VRRP message to one unicast peer (its checksum covers `dst`)."""
        if self._closed:
            raise VrrpSocketError(f"VRRP socket on {self.ifname} is closed")
        try:
            self._tx.sendto(payload, self._destination(dst))
        except OSError as exc:
            reason = describe_os_error(self.ifname, exc)
            raise VrrpSocketError(
                f"sending VRRP on {self.ifname} failed: {dst}: {reason}", code=exc.errno
            ) from exc
        self.sent += 1

    async def recv(self) -> Received:
        """The next VRRP message for us (not our own, from a peer in unicast mode)."""
        dropped = 0
        while True:
            if self._closed:
                raise VrrpSocketError(f"VRRP socket on {self.ifname} is closed")
            try:
                data, ancdata, flags, address = self._rx.recvmsg(_BUFSIZE, _ANCBUFSIZE)
            except (BlockingIOError, InterruptedError):
                await self._readable()
                continue
            except OSError as exc:
                raise socket_error(f"reading VRRP on {self.ifname}", self.ifname, exc) from exc
            received = self._accept(data, ancdata, flags, address)
            if received is not None:
                self.received += 1
                return received
            dropped += 1
            if dropped % _RX_BATCH == 0:
                # recvmsg() does not suspend while data is queued: a flood of packets
                # dropped here (not_peer in unicast mode) must not starve the timers.
                await asyncio.sleep(0)

    def _accept(
        self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int, address: Any
    ) -> Received | None:
        overflows = overflow_count(ancdata)
        if overflows is not None and overflows != self._overflows:
            lost = (overflows - self._overflows) & 0xFFFFFFFF
            self._overflows = overflows
            self._drop("overflow", "?", f"{lost} packet(s) lost: receive buffer full", lost)
        if flags & socket.MSG_TRUNC:
            self._drop("truncated", _host(address), f"more than {_BUFSIZE} bytes")
            return None
        try:
            if self.source.version == 4:
                received = parse_v4(data)
            else:
                default = cast(IPv6Address, self.source) if self.unicast_peers else VRRP_MCAST_V6
                received = parse_v6(data, ancdata, address, default)
        except VrrpPacketError as exc:
            self._drop(exc.reason, _host(address), str(exc))
            return None
        reason = drop_reason(received.src, self.source, self._peer_set)
        if reason is not None:
            detail = "our own address" if reason == "own" else "not a configured unicast peer"
            self._drop(reason, received.src, f"from {received.src}: {detail}")
            return None
        return received

    def _drop(self, reason: str, src: object, detail: str, n: int = 1) -> None:
        self.dropped[reason] += n
        if self.on_drop is not None:
            self.on_drop(reason, src, detail, n)

    async def _readable(self) -> None:
        if self._waiter is not None:
            raise RuntimeError(f"recv() on the VRRP socket of {self.ifname} is already waiting")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter, self._waiter_loop = waiter, loop
        loop.add_reader(self._rx_fd, _wake, waiter)
        try:
            await waiter
        finally:
            if not self._closed:
                loop.remove_reader(self._rx_fd)
            self._waiter = self._waiter_loop = None

    def close(self) -> None:
        """Close both sockets; a pending recv() raises VrrpSocketError."""
        if self._closed:
            return
        self._closed = True
        waiter, loop = self._waiter, self._waiter_loop
        if waiter is not None and loop is not None:
            # Unregister before the fd is closed and maybe reused by another socket.
            loop.remove_reader(self._rx_fd)
            if not waiter.done():
                waiter.set_exception(VrrpSocketError(f"VRRP socket on {self.ifname} was closed"))
        self._rx.close()
        if self._tx is not self._rx:
            self._tx.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
