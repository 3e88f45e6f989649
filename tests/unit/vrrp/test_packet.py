"""The VRRPv3 codec: known bytes, round trips, every rejection label, and fuzzing."""

from __future__ import annotations

import shutil
import struct
import subprocess
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvip.vrrp.packet import (
    IPPROTO_VRRP,
    VRRP_MCAST_V4,
    VRRP_MCAST_V6,
    Advert,
    VrrpPacketError,
    checksum,
    decode,
    encode,
    parse_ipv4_datagram,
)

SRC4 = IPv4Address("10.20.30.52")
SRC6 = IPv6Address("fe80::5054:ff:febb:8764")
VIP4 = IPv4Address("10.20.30.50")

# Hand-checked: the one's complement sum of the pseudo-header
#   0a14 1e34 | e000 0012 | 0070 (zero, proto 112) | 000c (length 12)
# and the message with a zero checksum
#   3133 c801 0064 0000 | 0a14 1e32
# is 0x22ab4 -> folded 0x2ab6 -> complemented 0xd549.
KNOWN_IPV4 = bytes.fromhex("3133c8010064d5490a141e32")


def raw_message(
    *,
    version_type: int = 0x31,
    vrid: int = 51,
    priority: int = 200,
    count: int = 1,
    interval_field: int = 100,
    body: bytes = VIP4.packed,
    src: IPv4Address | IPv6Address = SRC4,
    dst: IPv4Address | IPv6Address = VRRP_MCAST_V4,
    fix_checksum: bool = True,
) -> bytes:
    """A VRRP message built field by field, so tests can make any field wrong on purpose."""
    message = struct.pack("!BBBBHH", version_type, vrid, priority, count, interval_field, 0) + body
    if not fix_checksum:
        return message
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, IPPROTO_VRRP, len(message))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(message), IPPROTO_VRRP)
    value = checksum(pseudo + message)
    return message[:6] + struct.pack("!H", value) + message[8:]


def ipv4_datagram(
    payload: bytes,
    *,
    src: IPv4Address = SRC4,
    dst: IPv4Address = VRRP_MCAST_V4,
    ttl: int = 255,
    protocol: int = IPPROTO_VRRP,
    options: bytes = b"",
    total_len: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    length = ihl * 4 + len(payload) if total_len is None else total_len
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0xC0, length, 7, 0, ttl, protocol, 0, src.packed, dst.packed
    )
    header += options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


# -- known good ------------------------------------------------------------------------------------


def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: these bytes sum to 0xddf2, so the checksum is its complement.
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_encode_known_ipv4_advert() -> None:
    advert = Advert(vrid=51, priority=200, max_advert_int=100, addresses=(VIP4,))
    assert encode(advert, SRC4, VRRP_MCAST_V4) == KNOWN_IPV4


def test_decode_known_ipv4_advert() -> None:
    advert = decode(KNOWN_IPV4, SRC4, VRRP_MCAST_V4, ttl=255)
    assert advert == Advert(51, 200, 100, (VIP4,))
    assert advert.family == 4


def test_checksum_depends_on_the_pseudo_header() -> None:
    # Same message, other source: VRRPv3 must reject it (a VRRPv2-style checksum would pass).
    with pytest.raises(VrrpPacketError) as err:
        decode(KNOWN_IPV4, IPv4Address("10.20.30.53"), VRRP_MCAST_V4, ttl=255)
    assert err.value.reason == "bad_checksum"


def test_round_trip_ipv4_several_addresses() -> None:
    addresses = tuple(IPv4Address(f"10.20.30.{n}") for n in (49, 50, 200))
    advert = Advert(vrid=7, priority=0, max_advert_int=4095, addresses=addresses)
    for dst in (VRRP_MCAST_V4, IPv4Address("10.20.30.51")):  # multicast and unicast peers
        data = encode(advert, SRC4, dst)
        assert len(data) == 8 + 4 * 3
        assert decode(data, SRC4, dst, ttl=255) == advert


def test_round_trip_ipv6_several_addresses() -> None:
    addresses = (IPv6Address("fe80::50"), IPv6Address("2001:db8::50"), IPv6Address("2001:db8::49"))
    advert = Advert(vrid=255, priority=254, max_advert_int=1, addresses=addresses)
    data = encode(advert, SRC6, VRRP_MCAST_V6)
    assert len(data) == 8 + 16 * 3
    assert decode(data, SRC6, VRRP_MCAST_V6, ttl=None) == advert
    assert decode(data, SRC6, VRRP_MCAST_V6, ttl=None).family == 6


def test_reserved_bits_are_ignored_on_receive() -> None:
    data = raw_message(interval_field=0xF000 | 100)
    assert decode(data, SRC4, VRRP_MCAST_V4, ttl=255).max_advert_int == 100


def test_reserved_bits_are_sent_as_zero() -> None:
    data = encode(Advert(1, 100, 0x0FFF, (VIP4,)), SRC4, VRRP_MCAST_V4)
    assert struct.unpack_from("!H", data, 4)[0] == 0x0FFF


# -- rejections ------------------------------------------------------------------------------------


def _reject(data: bytes, *, src=SRC4, dst=VRRP_MCAST_V4, ttl: int | None = 255) -> VrrpPacketError:
    with pytest.raises(VrrpPacketError) as err:
        decode(data, src, dst, ttl=ttl)
    return err.value


REJECTIONS = [
    (b"", 255, "truncated", "0 bytes"),
    (KNOWN_IPV4[:7], 255, "truncated", "7 bytes"),
    (KNOWN_IPV4, 64, "bad_ttl", "64"),
    (KNOWN_IPV4, 254, "bad_ttl", "254"),
    (raw_message(version_type=0x21), 255, "bad_version", "version 2"),
    (raw_message(version_type=0x32), 255, "bad_type", "type 2"),
    (KNOWN_IPV4[:6] + b"\x00\x00" + KNOWN_IPV4[8:], 255, "bad_checksum", "0x0000"),
    (KNOWN_IPV4[:-1] + b"\x33", 255, "bad_checksum", "checksum 0xd549"),
    (raw_message(count=0, body=b""), 255, "bad_count", "count 0"),
    (raw_message(count=0), 255, "bad_count", "count 0"),
    (raw_message(count=2), 255, "bad_count", "got 12"),
    (raw_message(body=VIP4.packed + b"\0\0"), 255, "bad_count", "got 14"),
    (raw_message(interval_field=0), 255, "bad_interval", "interval 0"),
    (raw_message(interval_field=0xF000), 255, "bad_interval", "interval 0"),
    (raw_message(body=bytes(16)), 255, "bad_family", "16 bytes"),
    (raw_message(vrid=0), 255, "bad_vrid", "VRID 0"),
]


@pytest.mark.parametrize(
    ("data", "ttl", "reason", "shown"),
    REJECTIONS,
    ids=[f"{case[2]}-{n}" for n, case in enumerate(REJECTIONS)],
)
def test_rejections_have_stable_labels_and_show_the_value(
    data: bytes, ttl: int, reason: str, shown: str
) -> None:
    error = _reject(data, ttl=ttl)
    assert error.reason == reason
    assert shown in str(error)
    assert str(error).startswith(reason + ": ")


def test_ipv6_advert_with_ipv4_sized_addresses_is_bad_family() -> None:
    data = raw_message(src=SRC6, dst=VRRP_MCAST_V6, count=4, body=bytes(16))
    # 4 x 4 bytes matches IPv4, but the sender is IPv6.
    assert _reject(data, src=SRC6, dst=VRRP_MCAST_V6).reason == "bad_family"


def test_ttl_none_skips_the_ttl_check() -> None:
    assert decode(KNOWN_IPV4, SRC4, VRRP_MCAST_V4, ttl=None).priority == 200


def test_packet_error_is_not_confused_with_misuse() -> None:
    error = _reject(b"")
    assert isinstance(error, ValueError)  # the contract: VrrpPacketError(ValueError)
    with pytest.raises(ValueError) as misuse:
        encode(Advert(0, 100, 100, (VIP4,)), SRC4, VRRP_MCAST_V4)
    assert not isinstance(misuse.value, VrrpPacketError)


@pytest.mark.parametrize(
    ("advert", "src", "dst", "shown"),
    [
        (Advert(0, 100, 100, (VIP4,)), SRC4, VRRP_MCAST_V4, "vrid"),
        (Advert(256, 100, 100, (VIP4,)), SRC4, VRRP_MCAST_V4, "vrid"),
        (Advert(1, -1, 100, (VIP4,)), SRC4, VRRP_MCAST_V4, "priority"),
        (Advert(1, 256, 100, (VIP4,)), SRC4, VRRP_MCAST_V4, "priority"),
        (Advert(1, 100, 0, (VIP4,)), SRC4, VRRP_MCAST_V4, "max_advert_int"),
        (Advert(1, 100, 4096, (VIP4,)), SRC4, VRRP_MCAST_V4, "max_advert_int"),
        (Advert(1, 100, 100, ()), SRC4, VRRP_MCAST_V4, "1..255 addresses"),
        (Advert(1, 100, 100, (VIP4,) * 256), SRC4, VRRP_MCAST_V4, "got 256"),
        (Advert(1, 100, 100, (VIP4, IPv6Address("::1"))), SRC4, VRRP_MCAST_V4, "IPv4"),  # type: ignore[arg-type]
        (Advert(1, 100, 100, (VIP4,)), SRC6, VRRP_MCAST_V6, "IPv6"),
        (Advert(1, 100, 100, (VIP4,)), SRC4, VRRP_MCAST_V6, "different IP versions"),
        (Advert(1, True, 100, (VIP4,)), SRC4, VRRP_MCAST_V4, "priority"),  # type: ignore[arg-type]
    ],
)
def test_encode_rejects_bad_input_with_value_error(
    advert: Advert, src: IPv4Address | IPv6Address, dst: IPv4Address | IPv6Address, shown: str
) -> None:
    with pytest.raises(ValueError, match=shown):
        encode(advert, src, dst)


def test_encode_wants_address_objects() -> None:
    with pytest.raises(TypeError, match="src must be"):
        encode(Advert(1, 100, 100, (VIP4,)), "10.20.30.52", VRRP_MCAST_V4)  # type: ignore[arg-type]


# -- raw IPv4 reads --------------------------------------------------------------------------------


def test_parse_ipv4_datagram_plain() -> None:
    src, dst, ttl, payload = parse_ipv4_datagram(ipv4_datagram(KNOWN_IPV4, ttl=255))
    assert (src, dst, ttl, payload) == (SRC4, VRRP_MCAST_V4, 255, KNOWN_IPV4)
    assert decode(payload, src, dst, ttl=ttl).vrid == 51


def test_parse_ipv4_datagram_with_options_ihl_6() -> None:
    router_alert = bytes.fromhex("94040000")  # one 4-byte option: IHL becomes 6
    datagram = ipv4_datagram(KNOWN_IPV4, options=router_alert, ttl=254)
    assert datagram[0] & 0x0F == 6
    src, dst, ttl, payload = parse_ipv4_datagram(datagram)
    assert payload == KNOWN_IPV4
    assert ttl == 254
    assert _reject(payload, ttl=ttl).reason == "bad_ttl"


def test_parse_ipv4_datagram_trims_to_total_length() -> None:
    datagram = ipv4_datagram(KNOWN_IPV4) + b"\0" * 6  # e.g. Ethernet padding
    datagram = datagram[:2] + struct.pack("!H", 20 + len(KNOWN_IPV4)) + datagram[4:]
    assert parse_ipv4_datagram(datagram)[3] == KNOWN_IPV4


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "truncated"),
        (bytes(19), "truncated"),
        (ipv4_datagram(KNOWN_IPV4, options=bytes(8))[:24], "truncated"),
        (ipv4_datagram(KNOWN_IPV4, total_len=200), "truncated"),
        (ipv4_datagram(KNOWN_IPV4, total_len=10), "bad_ip_header"),
        (b"\x60" + ipv4_datagram(KNOWN_IPV4)[1:], "bad_ip_header"),
        (b"\x44" + ipv4_datagram(KNOWN_IPV4)[1:], "bad_ip_header"),
        (ipv4_datagram(KNOWN_IPV4, protocol=17), "bad_protocol"),
    ],
)
def test_parse_ipv4_datagram_rejects_garbage(datagram: bytes, reason: str) -> None:
    with pytest.raises(VrrpPacketError) as err:
        parse_ipv4_datagram(datagram)
    assert err.value.reason == reason


# -- property tests --------------------------------------------------------------------------------

ipv4s = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
ipv6s = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


@st.composite
def adverts_with_endpoints(draw: st.DrawFn) -> tuple[Advert, object, object]:
    family = draw(st.sampled_from([4, 6]))
    addresses = ipv4s if family == 4 else ipv6s
    advert = Advert(
        vrid=draw(st.integers(1, 255)),
        priority=draw(st.integers(0, 255)),
        max_advert_int=draw(st.integers(1, 4095)),
        addresses=tuple(draw(st.lists(addresses, min_size=1, max_size=20))),  # type: ignore[arg-type]
    )
    return advert, draw(addresses), draw(addresses)


@settings(max_examples=300, deadline=None)
@given(adverts_with_endpoints())
def test_decode_inverts_encode(case: tuple[Advert, IPv4Address, IPv4Address]) -> None:
    advert, src, dst = case
    assert decode(encode(advert, src, dst), src, dst, ttl=255) == advert


@settings(max_examples=500, deadline=None)
@given(
    st.binary(max_size=120),
    st.sampled_from([(SRC4, VRRP_MCAST_V4), (SRC6, VRRP_MCAST_V6)]),
    st.one_of(st.none(), st.integers(0, 255)),
)
def test_random_bytes_raise_only_packet_errors(data: bytes, endpoints, ttl) -> None:
    src, dst = endpoints
    try:
        advert = decode(data, src, dst, ttl=ttl)
    except VrrpPacketError as error:
        assert error.reason in {
            "truncated",
            "bad_version",
            "bad_type",
            "bad_ttl",
            "bad_checksum",
            "bad_count",
            "bad_interval",
            "bad_family",
            "bad_vrid",
        }
    else:
        # Whatever got through re-encodes to exactly the checksum-valid message it came from,
        # reserved bits aside.
        again = encode(advert, src, dst)
        assert again[:4] == data[:4] and again[6:] == data[6:]


@settings(max_examples=500, deadline=None)
@given(
    adverts_with_endpoints(),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-12, 12),
)
def test_mutated_packets_raise_only_packet_errors(case, flips, resize: int) -> None:
    advert, src, dst = case
    data = bytearray(encode(advert, src, dst))
    for position, value in flips:
        data[position % len(data)] = value
    data = data[: len(data) + resize] if resize < 0 else data + bytes(resize)
    try:
        decoded = decode(bytes(data), src, dst, ttl=255)
    except VrrpPacketError:
        return
    assert 1 <= decoded.vrid <= 255 and 1 <= decoded.max_advert_int <= 4095


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_random_datagrams_raise_only_packet_errors(datagram: bytes) -> None:
    try:
        src, dst, ttl, payload = parse_ipv4_datagram(datagram)
    except VrrpPacketError as error:
        assert error.reason in {"truncated", "bad_ip_header", "bad_protocol"}
    else:
        assert datagram[9] == IPPROTO_VRRP
        assert len(payload) <= len(datagram) - 20


# -- an independent oracle -------------------------------------------------------------------------


def _pcap(packets: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)  # LINKTYPE_RAW
    for packet in packets:
        out += struct.pack("<IIII", 0, 0, len(packet), len(packet)) + packet
    return out


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_agrees_with_our_checksums(tmp_path: Path) -> None:
    v4 = encode(Advert(50, 200, 100, (VIP4,)), SRC4, VRRP_MCAST_V4)
    v6 = encode(
        Advert(50, 150, 100, (IPv6Address("fe80::50"), IPv6Address("2001:db8::50"))),
        SRC6,
        VRRP_MCAST_V6,
    )
    ipv6_header = struct.pack(
        "!IHBB16s16s", 0x60000000, len(v6), IPPROTO_VRRP, 255, SRC6.packed, VRRP_MCAST_V6.packed
    )
    capture = tmp_path / "vrrp.pcap"
    capture.write_bytes(_pcap([ipv4_datagram(v4), ipv6_header + v6]))
    result = subprocess.run(
        [
            "tshark",
            "-r",
            str(capture),
            "-T",
            "fields",
            "-e",
            "vrrp.prio",
            "-e",
            "vrrp.checksum.status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Wireshark's checksum status 1 means "Good".
    assert result.stdout.split() == ["200", "1", "150", "1"]
