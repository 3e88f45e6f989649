"""The SYN probe's frames, pure: what it sends and how it reads the answers."""

from __future__ import annotations

import socket
import struct

from pgvip.lab.syn_probe import _checksum, classify, syn_frame

SRC, VIP, MAC_C, MAC_A = "192.0.2.3", "192.0.2.50", "02:00:00:00:00:03", "02:00:00:00:00:01"


def _answer(flags: int, *, src: str = VIP, sport: int = 5432, dport: int = 40000) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 0, 1, 5 << 4, flags, 0, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(SRC)
    )
    return bytes(6) + bytes(6) + b"\x08\x00" + ip + tcp


def test_the_syn_frame_is_addressed_to_the_chosen_mac_with_valid_checksums() -> None:
    frame = syn_frame(MAC_C, MAC_A, SRC, VIP, 40000, 5432, 7)
    assert frame[:6] == bytes.fromhex("020000000001") and frame[12:14] == b"\x08\x00"
    ip, tcp = frame[14:34], frame[34:]
    assert _checksum(ip) == 0  # a header with its checksum sums to zero
    pseudo = socket.inet_aton(SRC) + socket.inet_aton(VIP) + struct.pack("!BBH", 0, 6, len(tcp))
    assert _checksum(pseudo + tcp) == 0
    assert tcp[13] == 0x02  # SYN only


def test_answers_are_classified_and_strangers_ignored() -> None:
    assert classify(_answer(0x12), VIP, 40000, 5432) == "accept"
    assert classify(_answer(0x14), VIP, 40000, 5432) == "reset"
    assert classify(_answer(0x12, dport=40001), VIP, 40000, 5432) is None  # another probe's
    assert classify(_answer(0x12, src="192.0.2.9"), VIP, 40000, 5432) is None
    assert classify(b"\x00" * 20, VIP, 40000, 5432) is None


def test_accept_sampler_counts_doubles_and_outcomes_per_node() -> None:
    from pgvip.lab.accept_sampler import AcceptSampler, Round

    s = AcceptSampler("ns", {"p1": MAC_A, "p2": MAC_C}, VIP, 5432)
    s.rounds = [
        Round(1.0, {"p1": "accept", "p2": "reset"}),
        Round(2.0, {"p1": "reset", "p2": "reset"}),
        Round(3.0, {"p1": "accept", "p2": "accept"}),
        Round(4.0, {"p1": "silent", "p2": "accept"}),
    ]
    assert [r.t for r in s.doubles()] == [3.0]
    assert s.rounds[2].accepting == ("p1", "p2")
    assert s.outcomes("p1") == {"accept": 2, "reset": 1, "silent": 1}
    assert s.outcomes("p1", since=2.0, until=4.0) == {"reset": 1, "accept": 1}


def test_an_accept_forwarded_to_the_holder_is_one_host_not_two() -> None:
    """A node with forwarding on (an RO director) that does not hold the VIP passes the SYN
    on; the SYN+ACK comes from the holder's MAC, so the holder is the one that accepted."""
    from pgvip.lab.accept_sampler import AcceptSampler
    from pgvip.lab.syn_probe import Answer

    mac_b = "02:00:00:00:00:02"
    s = AcceptSampler("ns", {"p1": MAC_A, "p2": mac_b}, VIP, 5432)
    s.rounds = [
        s._round(1.0, {"p1": Answer("accept", MAC_A), "p2": Answer("accept", MAC_A)}),
        s._round(2.0, {"p1": Answer("accept", MAC_A), "p2": Answer("accept", mac_b)}),
        s._round(3.0, {"p1": Answer("silent", None), "p2": Answer("accept", "02:00:00:00:00:09")}),
    ]
    assert s.rounds[0].accepting == ("p1",) and s.rounds[0].answered_by == {"p2": "p1"}
    assert s.outcomes("p2") == {"accept": 3}  # what a client there sees: it connects
    assert [r.t for r in s.doubles()] == [2.0]
    assert s.rounds[2].accepting == ("02:00:00:00:00:09",)  # a stranger is named by its MAC


def test_frame_source_is_the_sender_mac() -> None:
    from pgvip.lab.syn_probe import frame_source

    assert frame_source(syn_frame(MAC_C, MAC_A, SRC, VIP, 40000, 5432, 7)) == MAC_C
