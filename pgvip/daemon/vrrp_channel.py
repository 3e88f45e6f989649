"""One VRRP socket per (interface, family), shared by the instances on it:
encodes their adverts, decodes what arrives and routes it to the instance by VRID.

Every packet that does not reach an instance is counted by reason (`rejected` and the
`pgvip_vrrp_packets_rejected` metric); docs/deployment.md lists the reasons.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pgvip.dataplane.vrrp_socket import Received, VrrpSocket
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

# Packets handled between two yields to the event loop: a socket that always has data
# would otherwise never let the advert timers run (a flood would silence the master).
RX_BATCH = 16
# RFC 5798 §7.1: an advert whose address list differs from ours is dropped, unless it
# comes from the address owner (priority 255), whose adverts are processed anyway.
OWNER_PRIORITY = 255
# Reasons that are normal on a shared LAN, not a sign of an attack or a misconfiguration.
_QUIET = frozenset({"unknown_vrid", "own"})


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
        self._addresses: dict[int, frozenset[IPAddress]] = {}
        self.sent = 0
        self.received = 0
        self.rejected: Counter[str] = Counter()
        sock.on_drop = self._reject

    def route(
        self,
        vrid: int,
        feed: Callable[[AdvertReceived], None],
        addresses: Iterable[IPAddress] = (),
    ) -> None:
        """Deliver valid adverts for `vrid` to `feed`; with `addresses` (the instance's VIPs),
        an advert listing other addresses is dropped as "address_mismatch"."""
        self._routes[vrid] = feed
        self._addresses[vrid] = frozenset(addresses)

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

    def _reject(self, reason: str, src: object, detail: str, n: int = 1) -> None:
        before = self.rejected[reason]
        self.rejected[reason] += n
        self._metrics.vrrp_rejected(reason, n)
        count = self.rejected[reason]
        # A flood of bad packets must not become a flood of log lines: log the
        # first of each kind, then once per 1000 with the running count.
        if before == 0 or count // 1000 != before // 1000:
            level = self._log.info if reason in _QUIET else self._log.warning
            level("VRRP packet rejected", reason=reason, src=str(src), detail=detail, count=count)

    async def serve(self) -> None:
        handled = 0
        while True:
            self.handle(await self._sock.recv())
            handled += 1
            if handled >= RX_BATCH:
                handled = 0
                # recv() does not suspend while data is queued: let the timers run.
                await asyncio.sleep(0)

    def handle(self, received: Received) -> None:
        """Decode one message and feed it to its instance, or count why not."""
        try:
            advert = decode(received.payload, received.src, received.dst, ttl=received.ttl)
        except VrrpPacketError as exc:
            self._reject(exc.reason, received.src, str(exc))
            return
        feed = self._routes.get(advert.vrid)
        if feed is None:
            # Another router's VRID on this LAN: dropped (RFC 5798 §7.1), logged quietly.
            self._reject("unknown_vrid", received.src, f"VRID {advert.vrid} is not configured")
            return
        expected = self._addresses[advert.vrid]
        if expected and advert.priority != OWNER_PRIORITY and set(advert.addresses) != expected:
            listed = ", ".join(str(a) for a in advert.addresses)
            ours = ", ".join(sorted(str(a) for a in expected))
            self._reject(
                "address_mismatch",
                received.src,
                f"VRID {advert.vrid} from {received.src} lists {listed}, ours is {ours}",
            )
            return
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
