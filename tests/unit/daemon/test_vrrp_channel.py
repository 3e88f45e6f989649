"""The VRRP channel between socket and instances: every packet that reaches no instance is
counted by a specific reason in the metrics, and a flood cannot starve the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from pgvip.daemon.vrrp_channel import RX_BATCH, VrrpChannel
from pgvip.dataplane.vrrp_socket import Received, VrrpSocket
from pgvip.status.metrics import VRRP_DROP_REASONS, Metrics
from pgvip.vrrp.events import AdvertReceived
from pgvip.vrrp.packet import VRRP_MCAST_V4, Advert, encode

SRC = IPv4Address("192.0.2.1")
PEER = IPv4Address("192.0.2.2")
VIP = IPv4Address("192.0.2.50")
REPO = Path(__file__).resolve().parents[3]


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _at(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))

    def __getattr__(self, level: str) -> Any:
        return self._at(level)


def advert(
    vrid: int = 50, priority: int = 100, addresses: tuple[IPv4Address, ...] = (VIP,)
) -> bytes:
    return encode(Advert(vrid, priority, 100, addresses), PEER, VRRP_MCAST_V4)


def ip4(payload: bytes, src: IPv4Address = PEER, ttl: int = 255, protocol: int = 112) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(payload), 0, 0, ttl, protocol, 0,
        src.packed, VRRP_MCAST_V4.packed,
    )  # fmt: skip
    return header + payload


def rejected(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "pgvip_vrrp_packets_rejected_total":
                out[sample.labels["reason"]] = sample.value
    return out


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    writer, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    reader.setblocking(False)
    yield writer, reader
    writer.close()
    reader.close()


def make_channel(
    reader: socket.socket, peers: tuple[IPv4Address, ...] = ()
) -> tuple[VrrpChannel, Metrics, Log, list[AdvertReceived]]:
    sock = VrrpSocket(
        ifname="eth0", ifindex=2, source=SRC, unicast_peers=peers, tx=reader, rx=reader
    )
    metrics, log = Metrics(), Log()
    channel = VrrpChannel(sock, SRC, peers, log, metrics)
    fed: list[AdvertReceived] = []
    channel.route(50, fed.append, [VIP])
    return channel, metrics, log, fed


def test_every_drop_reason_has_a_series_from_the_start() -> None:
    assert rejected(Metrics()) == dict.fromkeys(VRRP_DROP_REASONS, 0.0)


def test_every_reason_the_code_can_produce_is_a_known_series() -> None:
    """A new reject reason in the code must be added to VRRP_DROP_REASONS (and the docs)."""
    found: set[str] = set()
    for module in ("pgvip/vrrp/packet.py", "pgvip/dataplane/vrrp_socket.py"):
        text = (REPO / module).read_text()
        found |= set(re.findall(r'VrrpPacketError\(\s*"([a-z_]+)"', text))
        found |= set(re.findall(r'return "([a-z_]+)"', text))
        found |= set(re.findall(r'self\._drop\("([a-z_]+)"', text))
    channel = (REPO / "pgvip/daemon/vrrp_channel.py").read_text()
    found |= set(re.findall(r'self\._reject\(\s*"([a-z_]+)"', channel))
    assert {"bad_ttl", "own", "not_peer", "unknown_vrid", "address_mismatch"} <= found
    assert found <= set(VRRP_DROP_REASONS), found - set(VRRP_DROP_REASONS)
    docs = (REPO / "docs/deployment.md").read_text()
    missing = [reason for reason in VRRP_DROP_REASONS if f"`{reason}`" not in docs]
    assert not missing, f"docs/deployment.md does not explain {missing}"


BAD = [
    ("bad_ttl", Received(advert(), PEER, VRRP_MCAST_V4, 254)),
    ("bad_checksum", Received(advert()[:-1] + b"\x00", PEER, VRRP_MCAST_V4, 255)),
    ("truncated", Received(advert()[:7], PEER, VRRP_MCAST_V4, 255)),
    ("bad_version", Received(b"\x21" + advert()[1:], PEER, VRRP_MCAST_V4, 255)),
    ("unknown_vrid", Received(advert(vrid=51), PEER, VRRP_MCAST_V4, 255)),
    (
        "address_mismatch",
        Received(advert(addresses=(IPv4Address("192.0.2.99"),)), PEER, VRRP_MCAST_V4, 255),
    ),
    (
        "address_mismatch",
        Received(advert(addresses=(VIP, IPv4Address("192.0.2.99"))), PEER, VRRP_MCAST_V4, 255),
    ),
]


@pytest.mark.parametrize(
    ("reason", "received"), BAD, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD)]
)
def test_a_dropped_advert_is_counted_by_reason_and_fed_to_nobody(
    pair: tuple[socket.socket, socket.socket], reason: str, received: Received
) -> None:
    channel, metrics, log, fed = make_channel(pair[1])
    channel.handle(received)
    channel.handle(received)
    assert fed == []
    counts = rejected(metrics)
    assert counts[reason] == 2
    assert sum(counts.values()) == 2
    assert channel.received == 0
    # One log line for the first of each kind, not one per packet.
    assert [e for _, e, kw in log.lines if kw.get("reason") == reason] == ["VRRP packet rejected"]


def test_another_vrid_is_logged_quietly(pair: tuple[socket.socket, socket.socket]) -> None:
    channel, _, log, _ = make_channel(pair[1])
    channel.handle(Received(advert(vrid=51), PEER, VRRP_MCAST_V4, 255))
    assert [level for level, _, _ in log.lines] == ["info"]


def test_a_valid_advert_reaches_its_instance(pair: tuple[socket.socket, socket.socket]) -> None:
    channel, metrics, _, fed = make_channel(pair[1])
    channel.handle(Received(advert(priority=200), PEER, VRRP_MCAST_V4, 255))
    assert [(e.src, e.advert.priority, e.advert.addresses) for e in fed] == [(PEER, 200, (VIP,))]
    assert sum(rejected(metrics).values()) == 0


def test_the_address_owner_is_heard_whatever_it_lists(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # RFC 5798 §7.1: a mismatch is dropped "if the packet was not generated by the address
    # owner (Priority does not equal 255)".
    channel, metrics, _, fed = make_channel(pair[1])
    other = (IPv4Address("192.0.2.99"),)
    channel.handle(Received(advert(priority=255, addresses=other), PEER, VRRP_MCAST_V4, 255))
    assert len(fed) == 1
    assert sum(rejected(metrics).values()) == 0


async def test_socket_level_drops_reach_the_metrics(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    writer, reader = pair
    channel, metrics, _, fed = make_channel(reader, peers=(PEER,))
    writer.send(ip4(advert(), src=SRC))  # our own address
    writer.send(ip4(advert(), src=IPv4Address("192.0.2.3")))  # not a unicast peer
    writer.send(b"\x45" + bytes(10))  # shorter than an IPv4 header
    writer.send(b"\x65" + bytes(30))  # not IPv4
    writer.send(ip4(advert(), protocol=17))
    writer.send(ip4(advert(), ttl=1))
    writer.send(ip4(advert(priority=201)))  # the only valid one
    task = asyncio.create_task(channel.serve())
    try:
        for _ in range(100):
            if fed:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        channel.close()
    counts = {k: v for k, v in rejected(metrics).items() if v}
    assert counts == {
        "own": 1,
        "not_peer": 1,
        "truncated": 1,
        "bad_ip_header": 1,
        "bad_protocol": 1,
        "bad_ttl": 1,
    }
    assert [e.advert.priority for e in fed] == [201]


class EndlessSocket:
    """A socket that always has a (bad) packet ready, like one under a flood."""

    on_drop = None

    def __init__(self) -> None:
        self.reads = 0

    async def recv(self) -> Received:
        self.reads += 1
        return Received(b"\x00" * 3, PEER, VRRP_MCAST_V4, 255)

    def close(self) -> None:
        pass


async def test_a_flood_does_not_starve_the_event_loop() -> None:
    sock = EndlessSocket()
    channel = VrrpChannel(sock, SRC, (), Log(), Metrics())  # type: ignore[arg-type]
    task = asyncio.create_task(channel.serve())
    ticks = 0
    try:
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 0.2:
            await asyncio.sleep(0.01)  # a timer, like the master's Adver_Timer
            ticks += 1
    finally:
        task.cancel()
    assert ticks >= 5, f"timers ran {ticks} times in 0.2 s while the socket was flooded"
    assert sock.reads > RX_BATCH * ticks / 2, "the channel kept reading meanwhile"
    assert channel.rejected["truncated"] == sock.reads


def test_kernel_overflow_drops_are_counted_from_the_running_total(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    channel, metrics, log, _ = make_channel(pair[1])
    sock = channel._sock
    datagram = ip4(advert())
    ovfl = socket.SOL_SOCKET, 40

    def read(total: int | None) -> Received | None:
        anc = [] if total is None else [(*ovfl, struct.pack("=I", total))]
        return sock._accept(datagram, anc, 0, ("192.0.2.2", 0))

    assert read(None) is not None
    assert read(5) is not None  # 5 lost before this one, which still counts
    assert read(5) is not None  # the same running total: nothing new lost
    assert read(7) is not None
    assert rejected(metrics)["overflow"] == 7
    assert [kw["count"] for _, e, kw in log.lines if kw.get("reason") == "overflow"] == [5]


async def test_a_flood_of_socket_level_drops_does_not_starve_the_event_loop(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """In unicast mode a stranger's packets are dropped inside recv(), which must yield too."""
    writer, reader = pair
    channel, metrics, _, _ = make_channel(reader, peers=(PEER,))
    stranger = ip4(advert(), src=IPv4Address("192.0.2.3"))
    writer.setblocking(False)
    queued = 0
    with contextlib.suppress(BlockingIOError):
        while queued < 2000:
            writer.send(stranger)
            queued += 1
    assert queued >= 4 * RX_BATCH
    task = asyncio.create_task(channel.serve())
    ticks = 0
    try:
        while rejected(metrics)["not_peer"] < queued and ticks < 10 * queued:
            await asyncio.sleep(0)  # runs only when the reader yields
            ticks += 1
    finally:
        task.cancel()
        channel.close()
    assert rejected(metrics)["not_peer"] == queued
    assert ticks >= queued // RX_BATCH - 1, f"the loop ran {ticks} times during {queued} drops"
