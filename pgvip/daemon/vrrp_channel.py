"""One VRRP socket per (interface, family), shared by the instances on it:
encodes their adverts, decodes what arrives and routes it to the instance by VRID."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgvip.dataplane.vrrp_socket import VrrpSocket
from pgvip.vrrp.events import AdvertReceived
from pgvip.vrrp.packet import (
    VRRP_MCAST_V4,
    VRRP_MCAST_V6,
    Advert,
    VrrpPacketError,
    decode,
    encode,
)

if TYPE_CHECKING:
    from pgvip.status.metrics import Metrics

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class VrrpChannel:
    def __init__(
        self,
        sock: VrrpSocket,
        source: IPAddress,
        unicast_peers: tuple[IPAddress, ...],
        log: Any,
        metrics: Metrics,
    ) -> None:
        self._sock = sock
        self.source = source
        self._peers = unicast_peers
        self._group = VRRP_MCAST_V4 if source.version == 4 else VRRP_MCAST_V6
        self._log = log
        self._metrics = metrics
        self._routes: dict[int, Callable[[AdvertReceived], None]] = {}
        self.sent = 0
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self._last_reject_logged: dict[str, int] = {}

    def route(self, vrid: int, feed: Callable[[AdvertReceived], None]) -> None:
        self._routes[vrid] = feed

    def send(self, advert: Advert) -> None:
        # The checksum covers the destination address, so each unicast peer
        # gets its own encoding.
        for dst in self._peers or (self._group,):
            payload = encode(advert, self.source, dst)
            if self._peers:
                self._sock.send_to(payload, dst)
            else:
                self._sock.send(payload)
            self.sent += 1
            self._metrics.vrrp_sent()

    def _reject(self, reason: str, src: object, detail: str) -> None:
        self.rejected[reason] += 1
        self._metrics.vrrp_rejected(reason)
        count = self.rejected[reason]
        # A flood of bad packets must not become a flood of log lines: log the
        # first of each kind, then every 1000th with the running count.
        if count == 1 or count % 1000 == 0:
            self._log.warning(
                "VRRP packet rejected", reason=reason, src=str(src), detail=detail, count=count
            )

    async def serve(self) -> None:
        while True:
            received = await self._sock.recv()
            try:
                advert = decode(received.payload, received.src, received.dst, ttl=received.ttl)
            except VrrpPacketError as exc:
                self._reject(exc.reason, received.src, str(exc))
                continue
            feed = self._routes.get(advert.vrid)
            if feed is None:
                continue  # another router's VRID on this LAN: not ours to judge
            self.received += 1
            self._metrics.vrrp_received()
            feed(AdvertReceived(advert=advert, src=received.src))

    def close(self) -> None:
        self._sock.close()


async def open_channel(
    ifname: str,
    source: IPAddress,
    unicast_peers: tuple[IPAddress, ...],
    log: Any,
    metrics: Metrics,
) -> VrrpChannel:
    sock = await VrrpSocket.open(ifname, source.version, source, unicast_peers)
    return VrrpChannel(sock, source, unicast_peers, log, metrics)
