"""The RO engine's BalancerDriver: what it logs when the dataplane ends drained connections."""

from __future__ import annotations

from ipaddress import IPv4Address

from pgvip.daemon.ro.balancing import BalancerDriver
from pgvip.dataplane.balancer import RealServer, VirtualService
from pgvip.policy.backends import BackendSet
from tests.unit.daemon.ro_standins import FakeBalancer, RecordingLog

VIP = IPv4Address("10.20.30.49")


class CuttingBalancer(FakeBalancer):
    """As the nftables balancer: counts the connections it ended after a drain."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = 0


def service(*hosts: str) -> VirtualService:
    return VirtualService(VIP, 5432, tuple(RealServer(IPv4Address(h), 5432, 1) for h in hosts))


async def test_connections_ended_after_a_drain_are_logged_with_their_count() -> None:
    balancer, log = CuttingBalancer(), RecordingLog()
    driver = BalancerDriver(balancer, log=log, clock=lambda: 0.0)
    empty = BackendSet(backends=(), reason="test")
    await driver.apply(service("10.20.30.51", "10.20.30.52"), empty)
    event = "RO: ended the remaining connections of backends whose drain is over"
    assert event not in log.events()
    balancer.cut = 3
    await driver.apply(service("10.20.30.51"), empty)
    assert [kw for _lv, e, kw in log.records if e == event] == [
        {"connections": 3, "dataplane": "fake"}
    ]
    await driver.apply(service("10.20.30.51"), empty)  # nothing new ended: no second line
    assert log.events().count(event) == 1
