"""Announce a VIP's new home: gratuitous ARP (IPv4) and unsolicited Neighbour Advertisement (IPv6).

The kernel sends neither when an address is added, so after a takeover neighbours keep the
old MAC until their cache expires; `Announcer` sends repeated bursts and cancels them on release.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from pgvip.dataplane.privileges import describe_missing_interface
from pgvip.vrrp.packet import checksum

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
BROADCAST_MAC = b"\xff" * 6
ETH_MIN_FRAME = 60  # without FCS; short frames are padded, as a NIC would

ICMPV6_NEIGHBOR_ADVERT = 136
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LL_ADDR = 2
ALL_NODES = IPv6Address("ff02::1")
NDISC_HOP_LIMIT = 255  # RFC 4861 §7.1.2: receivers drop NAs that arrived with less

SIOCGIFHWADDR = 0x8927
_IFREQ_SIZE = 40

Announceable = IPv4Address | IPv6Address | IPv4Interface | IPv6Interface

log = logging.getLogger(__name__)


class AnnounceError(RuntimeError):
    """Sending one announcement failed; the message names the address and interface."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _as_error(action: str, ifname: str, exc: OSError) -> AnnounceError:
    code = exc.errno
    if code in (errno.EPERM, errno.EACCES):
        reason = "needs CAP_NET_RAW (permission denied)"
    elif code in (errno.ENODEV, errno.ENXIO):
        reason = describe_missing_interface(ifname)
    elif code == errno.ENETDOWN:
        reason = f"interface {ifname} is down"
    else:
        reason = exc.strerror or str(exc)
    return AnnounceError(f"{action} failed: {reason}", code=code)


# -- frame builders (pure) --------------------------------------------------------------


def _check_mac(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise ValueError(f"an Ethernet address is 6 bytes, got {len(mac)}")
    return bytes(mac)


def build_garp_frame(mac: bytes, address: IPv4Address) -> bytes:
    """An Ethernet broadcast ARP request with SPA = TPA = `address` (an ARP Announcement).

    RFC 5227 §3 prefers a request over a reply: every host processes it, and the target
    hardware address is left zero.
    """
    mac = _check_mac(mac)
    ethernet = BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        ARPHRD_ETHER,
        ETH_P_IP,
        6,
        4,
        ARPOP_REQUEST,
        mac,
        address.packed,
        b"\x00" * 6,
        address.packed,
    )
    return (ethernet + arp).ljust(ETH_MIN_FRAME, b"\x00")


def icmpv6_checksum(src: IPv6Address, dst: IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum of `message` (its checksum field zero) over the pseudo-header."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(message), socket.IPPROTO_ICMPV6)
    return checksum(pseudo + message)


def build_unsolicited_na(
    mac: bytes, target: IPv6Address, source: IPv6Address | None = None
) -> bytes:
    """An ICMPv6 Neighbour Advertisement for `target`: Override set, Solicited clear, TLLA = mac.

    The checksum is filled in when `source` is given (the destination is ff02::1); a raw
    ICMPv6 socket makes the kernel compute it anyway, so sending does not need it.
    """
    mac = _check_mac(mac)
    message = struct.pack(
        "!BBHI16sBB6s",
        ICMPV6_NEIGHBOR_ADVERT,
        0,
        0,
        NA_FLAG_OVERRIDE,
        target.packed,
        ND_OPT_TARGET_LL_ADDR,
        1,  # option length in units of 8 octets
        mac,
    )
    if source is None:
        return message
    value = icmpv6_checksum(source, ALL_NODES, message)
    return message[:2] + struct.pack("!H", value) + message[4:]


# -- senders -----------------------------------------------------------------------------


def interface_mac(sock: socket.socket, ifname: str) -> bytes:
    """The Ethernet address of `ifname`, in the namespace of `sock`."""
    ifreq = struct.pack(f"{_IFREQ_SIZE}s", ifname.encode()[:15])
    result = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, ifreq)
    family = struct.unpack_from("H", result, 16)[0]
    if family != ARPHRD_ETHER:
        raise AnnounceError(
            f"interface {ifname} is not Ethernet (hardware type {family}): no MAC to announce"
        )
    return bytes(result[18:24])


def send_garp(ifname: str, address: IPv4Address | IPv4Interface) -> None:
    """Send one gratuitous ARP (ARP Announcement) for `address` out of `ifname`."""
    ip = address.ip if isinstance(address, IPv4Interface) else address
    action = f"gratuitous ARP for {ip} on {ifname}"
    try:
        # Protocol 0: this socket only sends, so it must not queue every ARP on the host.
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise _as_error(action, ifname, exc) from exc
    with sock:
        try:
            frame = build_garp_frame(interface_mac(sock, ifname), ip)
            sock.sendto(frame, (ifname, ETH_P_ARP))
        except AnnounceError as exc:
            raise AnnounceError(f"{action} failed: {exc}", code=exc.code) from exc
        except OSError as exc:
            raise _as_error(action, ifname, exc) from exc


def send_unsolicited_na(ifname: str, address: IPv6Address | IPv6Interface) -> None:
    """Send one unsolicited Neighbour Advertisement for `address` to ff02::1 out of `ifname`."""
    ip = address.ip if isinstance(address, IPv6Interface) else address
    action = f"unsolicited neighbour advertisement for {ip} on {ifname}"
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    except OSError as exc:
        raise _as_error(action, ifname, exc) from exc
    with sock:
        try:
            try:
                ifindex = socket.if_nametoindex(ifname)
            except OSError:
                # if_nametoindex() reports a missing name without an errno.
                raise OSError(errno.ENODEV, "no such interface") from None
            mac = interface_mac(sock, ifname)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, NDISC_HOP_LIMIT)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            try:
                # Like the kernel's own unsolicited NA, send from the VIP itself.
                sock.bind((str(ip), 0, 0, ifindex))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise
                # Not (yet) assigned: the kernel picks a source; the NA is still valid.
            sock.sendto(build_unsolicited_na(mac, ip), (str(ALL_NODES), 0, 0, ifindex))
        except AnnounceError as exc:
            raise AnnounceError(f"{action} failed: {exc}", code=exc.code) from exc
        except OSError as exc:
            raise _as_error(action, ifname, exc) from exc


# -- bursts ------------------------------------------------------------------------------


class Announcer:
    """Repeats announcements after a takeover: a burst, then an optional periodic refresh.

    One burst at a time: a new `burst()` or `stop()` cancels the running one (and its
    refresh). Send failures go to `on_error` (default: logged) and the burst goes on.
    """

    def __init__(
        self,
        *,
        on_error: Callable[[AnnounceError], None] | None = None,
        send_v4: Callable[[str, IPv4Address], None] = send_garp,
        send_v6: Callable[[str, IPv6Address], None] = send_unsolicited_na,
    ) -> None:
        self._on_error = on_error
        self._send_v4 = send_v4
        self._send_v6 = send_v6
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # announcements sent since creation (for metrics)
        self.failed = 0  # announcements that raised AnnounceError

    @property
    def active(self) -> bool:
        """True while a burst or its refresh is running."""
        return self._task is not None and not self._task.done()

    def stop(self) -> None:
        """Cancel the running burst and refresh (call when the VIPs are released)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def burst(
        self,
        ifname: str,
        addresses: Iterable[Announceable],
        count: int,
        interval: float,
        *,
        refresh: float | None = None,
    ) -> int:
        """Send `count` rounds `interval` seconds apart (first at once); return how many sent.

        Returns early, with the number sent so far, if a newer burst or `stop()` cancels it.
        With `refresh`, a round is then repeated every `refresh` seconds in the background
        until `stop()` or the next burst. Neighbours ignore a GARP within their `locktime`
        (1 s by default) of the last update, so keep `interval` above 1 s.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if interval < 0:
            raise ValueError(f"interval must not be negative, got {interval}")
        if refresh is not None and refresh <= 0:
            raise ValueError(f"refresh must be positive, got {refresh}")
        ips = [a.ip if isinstance(a, IPv4Interface | IPv6Interface) else a for a in addresses]
        self.stop()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run(ifname, ips, count, interval, refresh, done))
        self._task = task
        try:
            return await done
        except asyncio.CancelledError:
            # Our caller was cancelled: it no longer wants the burst it started.
            if self._task is task:
                self.stop()
            raise

    async def _run(
        self,
        ifname: str,
        ips: list[IPv4Address | IPv6Address],
        count: int,
        interval: float,
        refresh: float | None,
        done: asyncio.Future[int],
    ) -> None:
        sent = 0
        try:
            for round_number in range(count):
                if round_number:
                    await asyncio.sleep(interval)
                sent += self._round(ifname, ips)
            done.set_result(sent)
            while refresh is not None:
                await asyncio.sleep(refresh)
                self._round(ifname, ips)
        except asyncio.CancelledError:
            if not done.done():
                done.set_result(sent)
            raise
        except Exception as exc:
            # A bug, not a send failure (those are AnnounceError): let the caller see it.
            if done.done():
                raise
            done.set_exception(exc)

    def _round(self, ifname: str, ips: list[IPv4Address | IPv6Address]) -> int:
        sent = 0
        for ip in ips:
            try:
                if isinstance(ip, IPv4Address):
                    self._send_v4(ifname, ip)
                else:
                    self._send_v6(ifname, ip)
            except AnnounceError as exc:
                self.failed += 1
                self._report(exc)
            else:
                sent += 1
                self.sent += 1
        return sent

    def _report(self, exc: AnnounceError) -> None:
        if self._on_error is not None:
            self._on_error(exc)
        else:
            log.warning("%s", exc)
