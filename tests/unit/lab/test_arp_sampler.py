"""The ARP sampler's pure parts (pgvip.lab.arp_sampler): the who-has frame, reply parsing,
the per-slot book that credits late replies to their own slot, and the counts."""

from __future__ import annotations

import ipaddress
import struct

from pgvip.lab.arp_sampler import (
    GRACE,
    TAGS,
    ArpSample,
    Reply,
    SlotBook,
    build_request,
    count_in,
    parse_reply,
)

VIP = ipaddress.IPv4Address("10.20.42.50")
RO = ipaddress.IPv4Address("10.20.42.49")
ME = ipaddress.IPv4Address("10.20.42.240")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def reply_frame(mac: bytes, ip: ipaddress.IPv4Address, to: ipaddress.IPv4Address) -> bytes:
    eth = bytes.fromhex("0a0000000009") + mac + b"\x08\x06"
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, ip.packed,
                      bytes.fromhex("0a0000000009"), to.packed)  # fmt: skip
    return (eth + arp).ljust(60, b"\x00")


def test_the_request_is_a_broadcast_who_has_from_the_tag_address() -> None:
    frame = build_request(MAC_A, ME, VIP)
    assert len(frame) == 60 and frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert struct.unpack_from("!H", frame, 20)[0] == 1  # a request
    assert frame[28:32] == ME.packed and frame[38:42] == VIP.packed
    assert parse_reply(frame) is None  # our own request is not a reply


def test_a_reply_is_parsed_and_anything_else_is_not() -> None:
    assert parse_reply(reply_frame(MAC_B, VIP, ME)) == Reply("02:00:00:00:00:02", VIP, ME)
    assert parse_reply(reply_frame(MAC_B, VIP, ME)[:40]) is None
    ip_frame = bytearray(reply_frame(MAC_B, VIP, ME))
    ip_frame[12:14] = b"\x08\x00"
    assert parse_reply(bytes(ip_frame)) is None


def test_a_late_reply_counts_in_its_own_slot_not_the_next() -> None:
    names = {"02:00:00:00:00:01": "p1", "02:00:00:00:00:02": "p2"}
    book = SlotBook([VIP, RO], names)
    tag0 = book.ask(0, 10.00)
    tag1 = book.ask(1, 10.02)
    assert tag0 != tag1
    book.answer(tag1, Reply("02:00:00:00:00:02", VIP, ME))  # the new holder, at once
    book.answer(tag0, Reply("02:00:00:00:00:01", VIP, ME))  # the old one, 30 ms late
    book.answer(tag1, Reply("02:00:00:00:00:09", RO, ME))  # a host outside: its MAC
    assert book.close_due(GRACE - 1) == []  # still open for replies
    closed = book.close_due(GRACE + 1)
    assert closed == [ArpSample(10.00, {VIP: ("p1",), RO: ()}),
                      ArpSample(10.02, {VIP: ("p2",), RO: ("02:00:00:00:00:09",)})]  # fmt: skip
    book.answer(tag0, Reply("02:00:00:00:00:01", VIP, ME))  # later than GRACE: dropped
    assert book.stray == 1


def test_tags_come_round_after_every_slot_was_closed() -> None:
    book = SlotBook([VIP], {})
    tags = [book.ask(n, float(n)) for n in range(TAGS)]
    assert len(set(tags)) == TAGS and GRACE < TAGS


def test_count_in_a_window() -> None:
    samples = [ArpSample(1.0, {VIP: ("p1",)}), ArpSample(2.0, {VIP: ("p1", "p2")}),
               ArpSample(3.0, {VIP: ()}), ArpSample(4.0, {VIP: ("p1", "p2", "x")})]  # fmt: skip
    assert count_in(samples, VIP, 1.5, 3.5) == (2, 1, 1, 2)
    assert count_in(samples, VIP, 0.0, 9.0) == (4, 2, 1, 3)
    assert count_in(samples, RO, 0.0, 9.0) == (4, 0, 4, 0)
