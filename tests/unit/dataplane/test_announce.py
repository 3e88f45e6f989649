"""GARP / NA frame bytes and the Announcer's burst, refresh and cancellation (fake senders)."""

from __future__ import annotations

import asyncio
import time
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

import pytest

from pgvip.dataplane.announce import (
    ALL_NODES,
    AnnounceError,
    Announcer,
    build_garp_frame,
    build_unsolicited_na,
    icmpv6_checksum,
)

MAC = bytes.fromhex("021122334455")
VIP4 = IPv4Address("192.0.2.50")
VIP6 = IPv6Address("2001:db8::50")


def test_garp_frame_bytes() -> None:
    expected = bytes.fromhex(
        "ffffffffffff" "021122334455" "0806"  # Ethernet: broadcast, from us, ARP
        "0001" "0800" "06" "04" "0001"  # Ethernet/IPv4, 6/4-byte addresses, request
        "021122334455" "c0000232"  # sender: our MAC, the VIP
        "000000000000" "c0000232"  # target: zero MAC, the VIP again (an announcement)
    )  # fmt: skip
    frame = build_garp_frame(MAC, VIP4)
    assert frame[:42] == expected
    assert len(frame) == 60 and frame[42:] == bytes(18)  # padded to the Ethernet minimum


def test_garp_rejects_a_bad_mac() -> None:
    with pytest.raises(ValueError, match="6 bytes, got 5"):
        build_garp_frame(MAC[:5], VIP4)


def test_na_bytes_without_checksum() -> None:
    expected = bytes.fromhex(
        "88" "00" "0000"  # type 136, code 0, checksum left to the kernel
        "20000000"  # flags: Override only (not Router, not Solicited)
        "20010db8000000000000000000000050"  # target
        "02" "01" "021122334455"  # option: Target Link-Layer Address, 1 x 8 bytes, our MAC
    )  # fmt: skip
    assert build_unsolicited_na(MAC, VIP6) == expected


def test_na_checksum_matches_tshark() -> None:
    # 0x91f4 is what tshark computed and marked "Good" for this NA from 2001:db8::50 to ff02::1.
    na = build_unsolicited_na(MAC, VIP6, source=VIP6)
    assert na[2:4] == bytes.fromhex("91f4")
    # And the one's complement property: summing with the checksum in place gives zero.
    assert icmpv6_checksum(VIP6, ALL_NODES, na) == 0


class FakeSenders:
    def __init__(self, fail: set[object] | None = None) -> None:
        self.calls: list[tuple[float, str, object]] = []
        self.fail = fail or set()

    def v4(self, ifname: str, address: IPv4Address) -> None:
        self._send(ifname, address)

    def v6(self, ifname: str, address: IPv6Address) -> None:
        self._send(ifname, address)

    def _send(self, ifname: str, address: object) -> None:
        self.calls.append((time.monotonic(), ifname, address))
        if address in self.fail:
            raise AnnounceError(f"cannot announce {address}")


def announcer(fake: FakeSenders, errors: list[AnnounceError] | None = None) -> Announcer:
    return Announcer(
        send_v4=fake.v4,
        send_v6=fake.v6,
        on_error=None if errors is None else errors.append,
    )


async def test_burst_sends_count_rounds_spaced_by_interval() -> None:
    fake = FakeSenders()
    ann = announcer(fake)
    start = time.monotonic()
    sent = await ann.burst("eth0", [IPv4Interface("192.0.2.50/32"), VIP6], count=3, interval=0.05)
    assert sent == 6 and ann.sent == 6 and ann.failed == 0
    assert [(ifname, address) for _, ifname, address in fake.calls] == [
        ("eth0", VIP4),
        ("eth0", VIP6),
    ] * 3
    times = [t - start for t, _, _ in fake.calls[::2]]
    assert times[0] < 0.03  # the first round goes at once
    assert all(0.04 <= b - a <= 0.2 for a, b in zip(times, times[1:], strict=False)), times
    assert not ann.active


async def test_new_burst_cancels_the_running_one() -> None:
    fake = FakeSenders()
    ann = announcer(fake)
    first = asyncio.create_task(ann.burst("eth0", [VIP4], count=10, interval=0.05))
    await asyncio.sleep(0.07)  # two rounds of the first burst
    second = await ann.burst("eth1", [IPv6Interface("2001:db8::50/128")], count=2, interval=0.01)
    assert await first == 2  # returned early with what it had sent
    assert second == 2
    await asyncio.sleep(0.15)
    assert [ifname for _, ifname, _ in fake.calls] == ["eth0", "eth0", "eth1", "eth1"]


async def test_stop_cancels_burst_and_refresh() -> None:
    fake = FakeSenders()
    ann = announcer(fake)
    task = asyncio.create_task(ann.burst("eth0", [VIP4], count=100, interval=0.02))
    await asyncio.sleep(0.05)
    assert ann.active
    ann.stop()
    sent = await task
    assert 1 <= sent < 100 and len(fake.calls) == sent
    await asyncio.sleep(0.05)
    assert len(fake.calls) == sent and not ann.active


async def test_refresh_repeats_after_the_burst_until_stopped() -> None:
    fake = FakeSenders()
    ann = announcer(fake)
    assert await ann.burst("eth0", [VIP4], count=2, interval=0.01, refresh=0.05) == 2
    assert ann.active  # the refresh keeps going in the background
    await asyncio.sleep(0.18)
    refreshed = len(fake.calls) - 2
    assert 2 <= refreshed <= 4
    ann.stop()
    await asyncio.sleep(0.1)
    assert len(fake.calls) - 2 == refreshed and not ann.active


async def test_failures_are_reported_and_the_burst_goes_on() -> None:
    fake = FakeSenders(fail={VIP4})
    errors: list[AnnounceError] = []
    ann = announcer(fake, errors)
    sent = await ann.burst("eth0", [VIP4, VIP6], count=2, interval=0.01)
    assert sent == 2 and ann.sent == 2 and ann.failed == 2
    assert [str(e) for e in errors] == ["cannot announce 192.0.2.50"] * 2


async def test_failures_are_logged_without_a_handler(caplog: pytest.LogCaptureFixture) -> None:
    ann = announcer(FakeSenders(fail={VIP4}))
    assert await ann.burst("eth0", [VIP4], count=1, interval=0) == 0
    assert "cannot announce 192.0.2.50" in caplog.text


async def test_cancelling_the_caller_stops_the_burst() -> None:
    fake = FakeSenders()
    ann = announcer(fake)
    task = asyncio.create_task(ann.burst("eth0", [VIP4], count=100, interval=0.02))
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(fake.calls)
    await asyncio.sleep(0.06)
    assert len(fake.calls) == count and not ann.active


async def test_a_sender_bug_reaches_the_caller() -> None:
    def broken(ifname: str, address: IPv4Address) -> None:
        raise KeyError("bug")

    ann = Announcer(send_v4=broken)
    with pytest.raises(KeyError):
        await ann.burst("eth0", [VIP4], count=1, interval=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0, "interval": 1.0}, "count must be at least 1"),
        ({"count": 1, "interval": -1.0}, "interval must not be negative"),
        ({"count": 1, "interval": 1.0, "refresh": 0}, "refresh must be positive"),
    ],
)
async def test_burst_arguments_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await announcer(FakeSenders()).burst("eth0", [VIP4], **kwargs)  # type: ignore[arg-type]
