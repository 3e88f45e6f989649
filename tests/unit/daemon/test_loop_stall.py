"""The event-loop stall meter (pure, fake times) and its asyncio watch on a real loop that
a blocking call stalls."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from pgvip.config import config_from_mapping
from pgvip.daemon import loop_stall
from pgvip.daemon.loop_stall import StallMeter, stall_master_down, stall_threshold
from pgvip.status.metrics import Metrics


def test_on_time_and_slightly_late_wake_ups_are_not_stalls() -> None:
    meter = StallMeter()
    assert meter.woke(due=10.0, now=10.0, threshold=0.2) is None
    assert meter.woke(due=10.0, now=10.2, threshold=0.2) is None
    assert meter.woke(due=10.0, now=9.9, threshold=0.2) is None  # early: never negative
    assert meter.count == 0 and meter.max_late_s == 0.0


def test_a_stall_is_reported_then_repeats_are_counted_until_the_next_report() -> None:
    meter = StallMeter(log_every=10.0)
    first = meter.woke(due=0.0, now=0.8, threshold=0.2)
    assert first is not None and first.report and first.late_s == pytest.approx(0.8)
    assert first.suppressed == 0
    second = meter.woke(due=2.0, now=3.5, threshold=0.2)  # 1.5 s late, within 10 s: counted
    third = meter.woke(due=5.0, now=5.3, threshold=0.2)
    assert second is not None and not second.report
    assert third is not None and not third.report
    later = meter.woke(due=11.0, now=11.4, threshold=0.2)
    assert later is not None and later.report
    assert later.suppressed == 2 and later.worst_s == pytest.approx(1.5)
    assert meter.count == 4 and meter.max_late_s == pytest.approx(1.5)


class _Log:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


async def test_a_blocked_loop_is_logged_counted_and_exported() -> None:
    meter, log, metrics = StallMeter(), _Log(), Metrics()
    task = asyncio.get_running_loop().create_task(
        loop_stall.watch(
            meter,
            lambda: 0.2,
            lambda: 0.6,
            log,
            metrics,
            tick=0.02,  # type: ignore[arg-type]
        )
    )
    try:
        await asyncio.sleep(0.1)
        assert meter.count == 0  # an idle loop on time
        time.sleep(0.8)  # a blocking call in the loop: every timer waits
        for _ in range(50):
            await asyncio.sleep(0.02)
            if log.warnings:
                break
    finally:
        task.cancel()
    assert meter.count >= 1 and meter.max_late_s >= 0.6
    event, fields = log.warnings[0]
    assert "event loop stalled" in event and "declared this node down" in event
    assert fields["late_s"] >= 0.6 and fields["threshold_s"] == 0.2
    text = metrics.render().decode()
    assert "pgvip_event_loop_stalls_total 1.0" in text
    assert 'pgvip_event_loop_lag_seconds_bucket{le="0.5"}' in text


async def test_a_short_stall_below_master_down_does_not_claim_peers_took_over() -> None:
    meter, log = StallMeter(), _Log()
    task = asyncio.get_running_loop().create_task(
        loop_stall.watch(meter, lambda: 0.1, lambda: 5.0, log, tick=0.02)  # type: ignore[arg-type]
    )
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.4)
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
    assert log.warnings and "declared this node down" not in log.warnings[0][0]


def test_the_stall_limits_follow_the_mode() -> None:
    base: dict[str, Any] = {
        "patroni": {"url": "http://127.0.0.1:8008", "poll_interval": 0.1},
        "vrrp": {"interface": "eth0", "advert_int": 50},
        "rw": {"vip": "10.22.0.50/24"},
    }
    vrrp = config_from_mapping(base)
    assert (stall_threshold(vrrp), stall_master_down(vrrp)) == (0.5, 1.5)
    bgp = config_from_mapping(
        base
        | {
            "rw": {"vip": "10.22.0.50", "announce": "bgp"},
            "bgp": {"local_as": 65101, "peer_as": 65000, "peers": ["10.20.0.1"]},
        }
    )
    # No adverts: the poll interval is the limit, and no peer declares anything down.
    assert stall_threshold(bgp) == 0.1 and stall_master_down(bgp) == math.inf
