"""The RO director's /cluster reader keeps one request open at a time: a Patroni whose DCS is
down blocks a REST worker per /cluster, and abandoned requests asked again every poll filled
its pool (the leader's POST /failsafe then timed out and failsafe_mode could not keep it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pgvip.daemon.ro.probes import ClusterReader
from pgvip.patroni.client import PatroniClient
from tests.unit.daemon.ro_standins import (
    Cluster,
    RecordingLog,
    cluster,  # noqa: F401  (fixture)
)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[PatroniClient]:  # noqa: F811
    async with PatroniClient(cluster.local.url, timeout=0.2) as c:
        yield c


async def test_a_hanging_cluster_is_asked_once_and_its_late_answer_is_used(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    reader = ClusterReader(client, log=RecordingLog(), patience=5.0)
    first = await reader.read()
    assert first is not None and len(first.members) == 3 and reader.error is None

    cluster.local.cluster_delay = 1.0  # the DCS is gone: each /cluster blocks for 1 s
    asked = cluster.local.cluster_requests
    t0 = asyncio.get_running_loop().time()
    for _ in range(4):  # four polls inside the hang: each waits the client's 0.2 s at most
        assert await reader.read() is first  # the last good view meanwhile
        assert reader.error is not None and "unanswered" in reader.error
    assert asyncio.get_running_loop().time() - t0 < 0.95
    assert cluster.local.cluster_requests == asked + 1, "asked again while one was open"
    assert cluster.local.cluster_open_max == 1 and reader.still_open == 3

    cluster.remove("p3")  # what Patroni will answer once its DCS is back
    cluster.local.cluster_delay = 0.0
    await asyncio.sleep(1.0)  # the open request is answered, with what Patroni has by then
    late = await reader.read()
    assert late is not None and late is not first and reader.error is None
    assert cluster.local.cluster_requests == asked + 1  # the late answer, not a new request
    fresh = await reader.read()  # the next poll asks anew
    assert fresh is not None and [m.name for m in fresh.members] == ["p1", "p2"]
    assert cluster.local.cluster_requests == asked + 2


async def test_a_request_that_fails_is_asked_again_at_the_next_poll(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    reader = ClusterReader(client, log=RecordingLog())
    cluster.local.cluster_status = 503
    assert await reader.read() is None and "no /cluster answer" in (reader.error or "")
    cluster.local.cluster_status = 200
    view = await reader.read()
    assert view is not None and reader.error is None
    assert cluster.local.cluster_requests == 2 and reader.still_open == 0
