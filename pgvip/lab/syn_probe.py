"""Ask one host, by its MAC, what it does with a TCP SYN to a VIP: accept, reset, or drop.

A client whose ARP cache still names the old holder sends its SYN there; what that host
answers is what the client's connect sees. This sends a hand-made SYN in an Ethernet frame
addressed to a chosen MAC (so every host can be asked, whatever the neighbour cache says)
and classifies the first answer: SYN+ACK "accept", RST "reset", ICMP "unreachable", nothing
within the timeout "silent". Each answer also names the MAC it came from: a host with
forwarding on that does not hold the VIP passes the SYN on to the holder, whose SYN+ACK then
comes from the holder's MAC, so "who accepted" is the answering MAC, not the one asked.
IPv4 only; needs CAP_NET_RAW; run inside the client's namespace.
The client's kernel answers a SYN+ACK it did not expect with a reset, so nothing lingers.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Mapping
from typing import NamedTuple

ETH_P_IP = 0x0800
OUTCOMES = ("accept", "reset", "unreachable", "silent")


class Answer(NamedTuple):
    outcome: str  # one of OUTCOMES
    mac: str | None  # the source MAC of the answer (None when silent)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _mac(text: str) -> bytes:
    raw = bytes.fromhex(text.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return raw


def syn_frame(
    src_mac: str, dst_mac: str, src: str, dst: str, sport: int, dport: int, seq: int
) -> bytes:
    """An Ethernet frame carrying one TCP SYN (IPv4, no options)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), seq & 0xFFFF, 0x4000, 64,
        socket.IPPROTO_TCP, 0, s, d,
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _mac(dst_mac) + _mac(src_mac) + struct.pack("!H", ETH_P_IP) + ip + tcp


def classify(frame: bytes, vip: str, sport: int, dport: int) -> str | None:
    """The outcome a received frame means for our SYN, or None if it is not an answer."""
    if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    proto, src = ip[9], socket.inet_ntoa(ip[12:16])
    if proto == socket.IPPROTO_ICMP and len(ip) >= ihl + 8 + 28:
        inner = ip[ihl + 8 :]
        inner_ihl = (inner[0] & 0x0F) * 4
        if socket.inet_ntoa(inner[16:20]) == vip and len(inner) >= inner_ihl + 4:
            isport, idport = struct.unpack("!HH", inner[inner_ihl : inner_ihl + 4])
            if (isport, idport) == (sport, dport) and ip[ihl] == 3:
                return "unreachable"
        return None
    if proto != socket.IPPROTO_TCP or src != vip or len(ip) < ihl + 14:
        return None
    th_sport, th_dport = struct.unpack("!HH", ip[ihl : ihl + 4])
    if (th_sport, th_dport) != (dport, sport):
        return None
    flags = ip[ihl + 13]
    if flags & 0x04:
        return "reset"
    if flags & 0x12 == 0x12:
        return "accept"
    return None


def frame_source(frame: bytes) -> str:
    """The source MAC of an Ethernet frame, as aa:bb:cc:dd:ee:ff."""
    return frame[6:12].hex(":")


def probe(ifname: str, dst_mac: str, vip: str, port: int, *, timeout: float = 0.3) -> str:
    """Send one SYN for vip:port to `dst_mac` out of `ifname`; one of OUTCOMES."""
    return probe_all(ifname, {"host": dst_mac}, vip, port, timeout=timeout)["host"].outcome


def probe_all(
    ifname: str, macs: Mapping[str, str], vip: str, port: int, *, timeout: float = 0.3
) -> dict[str, Answer]:
    """One SYN for vip:port to each host's MAC, all sent at once, so two answers "accept"
    from two different MACs in one round mean two hosts accepted at the same moment."""
    with open(f"/sys/class/net/{ifname}/address") as f:
        src_mac = f.read().strip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as route_sock:
        route_sock.connect((vip, port))  # sends nothing: asks for the source address
        src = route_sock.getsockname()[0]
    base = 20000 + int.from_bytes(os.urandom(2), "big") % 30000
    ports = {host: base + i for i, host in enumerate(macs)}
    answers = dict.fromkeys(macs, Answer("silent", None))
    pending = {sport: host for host, sport in ports.items()}
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP)) as sock:
        sock.bind((ifname, ETH_P_IP))
        for host, mac in macs.items():
            seq = int.from_bytes(os.urandom(4), "big")
            sock.send(syn_frame(src_mac, mac, src, vip, ports[host], port, seq))
        deadline = time.monotonic() + timeout
        while pending and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            frame, addr = sock.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            for sport in list(pending):
                answer = classify(frame, vip, sport, port)
                if answer is not None:
                    answers[pending.pop(sport)] = Answer(answer, frame_source(frame))
                    break
    return answers
