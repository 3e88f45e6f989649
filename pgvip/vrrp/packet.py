"""VRRPv3 advertisement codec (RFC 5798 / RFC 9568): bytes in, `Advert` out, and back.

Pure functions over bytes and `ipaddress` objects; the raw sockets live in pgvip.dataplane.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from pgvip.ranges import require_int

IPAddress = IPv4Address | IPv6Address

VRRP_MCAST_V4 = IPv4Address("224.0.0.18")
VRRP_MCAST_V6 = IPv6Address("ff02::12")
IPPROTO_VRRP = 112
VRRP_VERSION = 3
VRRP_TYPE_ADVERTISEMENT = 1
# RFC 5798 §5.1.1.3 / §5.1.2.2: a router never forwards VRRP, so anything below 255 was routed.
VRRP_TTL = 255
HEADER_LEN = 8
MAX_ADVERT_INT = 0x0FFF
MAX_ADDRESSES = 255

_HEADER = struct.Struct("!BBBBHH")
_ADDRESS_LEN = {4: 4, 6: 16}


class VrrpPacketError(ValueError):
    """A received packet is not a valid VRRPv3 advertisement (the peer's fault, not ours).

    `reason` is a stable short label for metrics and tests ("truncated", "bad_version",
    "bad_type", "bad_ttl", "bad_checksum", "bad_count", "bad_interval", "bad_family",
    "bad_vrid", "bad_ip_header", "bad_protocol"); the message says what was seen.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Advert:
    """One VRRPv3 ADVERTISEMENT, as carried on the wire (the interval stays in centiseconds)."""

    vrid: int  # 1..255
    priority: int  # 0..255; 0 means "the master is resigning"
    max_advert_int: int  # centiseconds, 12 bits (1..4095)
    addresses: tuple[IPv4Address, ...] | tuple[IPv6Address, ...]

    @property
    def family(self) -> int:
        """4 or 6: the IP version of the addresses (the codec checks they agree)."""
        return self.addresses[0].version if self.addresses else 0


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): one's complement of the one's complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    # RFC 5798 §5.2.8: the VRRPv3 checksum covers the IPv4 or IPv6 pseudo-header too,
    # unlike VRRPv2; a wrong choice here is what makes tshark say "[incorrect]".
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, length)
    return src.packed + dst.packed + struct.pack("!I3xB", length, IPPROTO_VRRP)


def _check_endpoints(src: object, dst: object) -> int:
    if not isinstance(src, IPv4Address | IPv6Address):
        raise TypeError(f"src must be an IPv4Address or IPv6Address, got {src!r}")
    if not isinstance(dst, IPv4Address | IPv6Address):
        raise TypeError(f"dst must be an IPv4Address or IPv6Address, got {dst!r}")
    if src.version != dst.version:
        raise ValueError(f"src {src} and dst {dst} are of different IP versions")
    return src.version


def encode(advert: Advert, src: IPAddress, dst: IPAddress) -> bytes:
    """The VRRP message (header + addresses) with its checksum over the pseudo-header.

    Raises ValueError (or TypeError) when the advert or addresses are not encodable:
    that is a bug on our side, unlike VrrpPacketError which blames the peer.
    """
    version = _check_endpoints(src, dst)
    require_int("vrid", advert.vrid, 1, 255)
    require_int("priority", advert.priority, 0, 255)
    require_int("max_advert_int (centiseconds)", advert.max_advert_int, 1, MAX_ADVERT_INT)
    addresses = advert.addresses
    if not isinstance(addresses, tuple) or not 1 <= len(addresses) <= MAX_ADDRESSES:
        count = len(addresses) if isinstance(addresses, tuple | list) else addresses
        raise ValueError(
            f"addresses must be a tuple of 1..{MAX_ADDRESSES} addresses, got {count!r}"
        )
    for address in addresses:
        if not isinstance(address, IPv4Address | IPv6Address) or address.version != version:
            raise ValueError(
                f"every address must be an IPv{version} address like the source {src}, "
                f"got {address!r}"
            )
    body = b"".join(address.packed for address in addresses)
    header = _HEADER.pack(
        (VRRP_VERSION << 4) | VRRP_TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        len(addresses),
        advert.max_advert_int,  # the 4 reserved bits above it are sent as zero
        0,
    )
    message = header + body
    value = checksum(_pseudo_header(src, dst, len(message)) + message)
    return message[:6] + struct.pack("!H", value) + message[8:]


def decode(data: bytes, src: IPAddress, dst: IPAddress, *, ttl: int | None) -> Advert:
    """Parse and strictly validate one VRRPv3 advertisement received from `src` on `dst`.

    `ttl` is the IPv4 TTL or IPv6 hop limit if the socket reported it (it must be 255).
    Any malformed input raises VrrpPacketError and nothing else.
    """
    version = _check_endpoints(src, dst)
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise VrrpPacketError(
            "truncated", f"{len(data)} bytes from {src}, a VRRP header needs {HEADER_LEN}"
        )
    if ttl is not None and ttl != VRRP_TTL:
        raise VrrpPacketError(
            "bad_ttl", f"TTL/hop limit {ttl} from {src}, must be {VRRP_TTL} (was it routed?)"
        )
    version_type, vrid, priority, count, rsvd_interval, _ = _HEADER.unpack_from(data)
    if version_type >> 4 != VRRP_VERSION:
        raise VrrpPacketError(
            "bad_version", f"VRRP version {version_type >> 4} from {src}, only 3 is supported"
        )
    if version_type & 0x0F != VRRP_TYPE_ADVERTISEMENT:
        raise VrrpPacketError(
            "bad_type", f"VRRP type {version_type & 0x0F} from {src}, only 1 (ADVERTISEMENT)"
        )
    address_len = _ADDRESS_LEN[version]
    other_len = _ADDRESS_LEN[10 - version]
    if count == 0:
        raise VrrpPacketError("bad_count", f"address count 0 from {src}, at least 1 is required")
    if len(data) != HEADER_LEN + count * address_len:
        if len(data) == HEADER_LEN + count * other_len:
            raise VrrpPacketError(
                "bad_family",
                f"{count} address(es) of {other_len} bytes from IPv{version} source {src}",
            )
        raise VrrpPacketError(
            "bad_count",
            f"address count {count} from {src} needs {HEADER_LEN + count * address_len} "
            f"bytes, got {len(data)}",
        )
    computed = checksum(_pseudo_header(src, dst, len(data)) + data)
    if computed != 0:
        sent = struct.unpack_from("!H", data, 6)[0]
        expected = checksum(_pseudo_header(src, dst, len(data)) + data[:6] + b"\0\0" + data[8:])
        raise VrrpPacketError(
            "bad_checksum",
            f"checksum 0x{sent:04x} from {src} to {dst}, expected 0x{expected:04x} "
            f"(VRRPv3 sums the IPv{version} pseudo-header)",
        )
    if vrid == 0:
        raise VrrpPacketError("bad_vrid", f"VRID 0 from {src}, valid VRIDs are 1..255")
    interval = rsvd_interval & MAX_ADVERT_INT  # RFC 5798 §5.2.6: ignore the reserved bits
    if interval == 0:
        raise VrrpPacketError("bad_interval", f"max advert interval 0 from {src}")
    addresses: tuple[IPv4Address, ...] | tuple[IPv6Address, ...]
    body = data[HEADER_LEN:]
    if version == 4:
        addresses = tuple(IPv4Address(body[i : i + 4]) for i in range(0, len(body), 4))
    else:
        addresses = tuple(IPv6Address(body[i : i + 16]) for i in range(0, len(body), 16))
    return Advert(vrid=vrid, priority=priority, max_advert_int=interval, addresses=addresses)


def parse_ipv4_datagram(datagram: bytes) -> tuple[IPv4Address, IPv4Address, int, bytes]:
    """Split a raw IPv4 socket read into (src, dst, ttl, VRRP payload).

    Linux raw sockets hand over the IP header (options included, so IHL may exceed 5).
    """
    datagram = bytes(datagram)
    if len(datagram) < 20:
        raise VrrpPacketError(
            "truncated", f"{len(datagram)} bytes, an IPv4 header needs at least 20"
        )
    version, ihl = datagram[0] >> 4, datagram[0] & 0x0F
    if version != 4:
        raise VrrpPacketError("bad_ip_header", f"IP version {version} in an IPv4 raw read")
    if ihl < 5:
        raise VrrpPacketError("bad_ip_header", f"IHL {ihl} (< 5 words) in the IPv4 header")
    header_len = ihl * 4
    if len(datagram) < header_len:
        raise VrrpPacketError(
            "truncated", f"{len(datagram)} bytes, the IPv4 header says IHL {ihl} ({header_len})"
        )
    # Linux keeps tot_len in network order on raw reads (BSD rewrites it), so it is usable.
    total_len = struct.unpack_from("!H", datagram, 2)[0]
    if total_len < header_len:
        raise VrrpPacketError(
            "bad_ip_header", f"total length {total_len} is shorter than the header ({header_len})"
        )
    if total_len > len(datagram):
        raise VrrpPacketError(
            "truncated", f"{len(datagram)} bytes read, the IPv4 header says {total_len}"
        )
    ttl, protocol = datagram[8], datagram[9]
    if protocol != IPPROTO_VRRP:
        raise VrrpPacketError("bad_protocol", f"IP protocol {protocol}, VRRP is {IPPROTO_VRRP}")
    src = IPv4Address(datagram[12:16])
    dst = IPv4Address(datagram[16:20])
    return src, dst, ttl, datagram[header_len:total_len]
