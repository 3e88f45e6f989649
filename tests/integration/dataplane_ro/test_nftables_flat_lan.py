"""Issue 13's goal on nftables, in a lab of its own: a flat-LAN client gets every one of 1000
connections through the RO VIP.

Its own module, so its own `ro_lab` (module-scoped): after these 1000 masqueraded connections,
test_nftables_lb.py's exact round-robin count for clients on the director itself came out 6/4
instead of 5/5 in about 1 run in 8 under CPU load, with no retransmitted SYN (root cause not
found; noted in issue 13's closing note)."""

from __future__ import annotations

import pytest

from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer

from .conftest import VIP4, RoLab, service

pytestmark = pytest.mark.integration


async def test_a_flat_lan_client_gets_every_one_of_1000_connections(
    ro_lab: RoLab, lb: NftablesLoadBalancer
) -> None:
    """Issue 13's goal on nftables: client, director and backends share one subnet and the
    backends' replies do not route via the director; one-armed NAT carries all of them."""
    await lb.apply(service(ro_lab, ("b1", 1), ("b2", 1)))
    seen = ro_lab.connect("cli", VIP4, 1000)
    assert seen == {"b1": 500, "b2": 500}, seen
