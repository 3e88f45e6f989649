"""The VRRP interface going down: the instance goes to FAULT, the reconciler does not re-add a
VIP the kernel flushed, nothing is sent on the dead link, and the VIP returns with the link.

InstanceRunner and Reconciler are real; the kernel (addresses, link, notifications), the
VRRP socket and the announcer are fakes."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator
from typing import Any

from pgvip.daemon.instance_runner import AnnounceSettings, InstanceRunner
from pgvip.daemon.notify import Notifier
from pgvip.daemon.reconciler import Reconciler
from pgvip.dataplane.address_watcher import EventsLost, LinkChanged
from pgvip.status.metrics import Metrics
from pgvip.vrrp.events import EligibilityChanged
from pgvip.vrrp.instance import State, VrrpInstance
from pgvip.vrrp.instance_config import InstanceConfig
from tests.unit.daemon.ro_standins import RecordingLog

VIP = ipaddress.ip_interface("10.9.0.100/24")
LEADER = EligibilityChanged(eligible=True, reason="/primary 200")


class FakeKernel:
    """Addresses of eth0 and its link state, as AddressManager shows them."""

    ifname = "eth0"

    def __init__(self) -> None:
        self.addrs: set[Any] = set()
        self.usable = True
        self.adds = 0

    async def add(self, vip: Any) -> bool:
        self.adds += 1
        new = vip not in self.addrs
        self.addrs.add(vip)
        return new

    async def remove(self, vip: Any) -> bool:
        had = vip in self.addrs
        self.addrs.discard(vip)
        return had

    async def has(self, vip: Any) -> bool:
        return vip in self.addrs

    async def link_usable(self) -> bool:
        return self.usable

    def invalidate(self) -> None:
        pass

    def link_down(self) -> None:
        """What `ip link set eth0 down` does before anyone reads the notification."""
        self.usable = False
        self.addrs.clear()  # IPv6 addresses are flushed; pgvip must not put them back


class FakeWatcher:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.dumped: tuple[bool, bool] | None = (True, True)  # what a link dump shows

    def link_state(self, ifname: str) -> tuple[bool, bool] | None:
        return self.dumped

    def __aiter__(self) -> FakeWatcher:
        return self

    async def __anext__(self) -> Any:
        return await self.queue.get()


class FakeChannel:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, advert: Any) -> None:
        self.sent += 1


class FakeAnnouncer:
    async def burst(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def stop(self) -> None:
        pass


class Rig:
    def __init__(self) -> None:
        self.kernel = FakeKernel()
        self.channel = FakeChannel()
        self.log = RecordingLog()
        instance = VrrpInstance(
            InstanceConfig(
                name="rw",
                vrid=50,
                priority=200,
                advert_int=5,  # 50 ms: the first election takes ~0.2 s of real time
                vips=(VIP,),
                primary_address=ipaddress.ip_address("10.9.0.1"),
            ),
            time.monotonic(),
        )
        self.runner = InstanceRunner(
            "rw",
            instance,
            ifname="eth0",
            channel=self.channel,  # type: ignore[arg-type]
            addresses=self.kernel,  # type: ignore[arg-type]
            announcer=FakeAnnouncer(),  # type: ignore[arg-type]
            announce=AnnounceSettings(1, 0.0, 0.0),
            notifier=Notifier(None, 1.0, self.log),
            log=self.log,
            metrics=Metrics(),
        )
        self.reconciler = Reconciler(
            [self.runner],
            self.kernel,  # type: ignore[arg-type]
            log=self.log,
            interval=3600,  # only the pokes of this test
        )
        self.watcher = FakeWatcher()

    def link(self, up: bool, carrier: bool = True) -> None:
        self.watcher.queue.put_nowait(LinkChanged("eth0", 2, up, carrier))

    async def until(self, what: str, check: Any, timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Rig]:
        """The runner and the reconciler's netlink watch as tasks, cancelled at the end."""
        tasks = [
            asyncio.create_task(self.runner.run()),
            asyncio.create_task(self.reconciler.watch(self.watcher)),
        ]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_link_down_faults_the_master_and_link_up_brings_the_vip_back() -> None:
    async with Rig().running() as rig:
        rig.runner.feed(LEADER)
        await rig.until("MASTER", lambda: rig.runner.instance.state is State.MASTER)
        assert rig.kernel.addrs == {VIP}

        rig.kernel.link_down()
        # The kernel flushed the VIP, the link notification is not read yet: a reconcile
        # in this window must not put the VIP back on a dead link.
        await rig.reconciler.reconcile_once()
        assert rig.kernel.addrs == set()

        sent = rig.channel.sent
        rig.link(up=False, carrier=False)
        await rig.until("FAULT", lambda: rig.runner.instance.state is State.FAULT)
        assert rig.runner.eligibility_reason == "interface eth0 is down"
        # Patroni still says leader; that must not lift the fault.
        rig.runner.feed(LEADER)
        await asyncio.sleep(0.3)
        await rig.reconciler.reconcile_once()
        assert rig.runner.instance.state is State.FAULT
        assert rig.kernel.addrs == set()
        assert rig.channel.sent == sent, "no advert can leave on a down link"
        assert "action failed" not in rig.log.events()
        assert "interface unusable: VIPs released until it is back" in rig.log.events("warning")

        rig.kernel.usable = True
        rig.link(up=True)
        await rig.until("MASTER again", lambda: rig.runner.instance.state is State.MASTER)
        assert rig.kernel.addrs == {VIP}
        assert "interface usable again" in rig.log.events("info")
        reasons = [kw.get("reason", "") for _, e, kw in rig.log.records if e == "transition"]
        assert any("interface eth0 is up again" in r for r in reasons), reasons


async def test_an_ipv4_vip_is_removed_when_the_carrier_goes() -> None:
    async with Rig().running() as rig:
        rig.runner.feed(LEADER)
        await rig.until("MASTER", lambda: rig.runner.instance.state is State.MASTER)
        rig.kernel.usable = False  # carrier lost: the kernel keeps IPv4 addresses
        rig.link(up=True, carrier=False)
        await rig.until("FAULT", lambda: rig.runner.instance.state is State.FAULT)
        await rig.until("VIP removed", lambda: rig.kernel.addrs == set())
        assert rig.runner.eligibility_reason == "interface eth0 has no carrier"


async def test_lost_notifications_resync_the_link_state() -> None:
    async with Rig().running() as rig:
        rig.runner.feed(LEADER)
        await rig.until("MASTER", lambda: rig.runner.instance.state is State.MASTER)
        # The link went down while the notification socket overran: only the re-dump says so.
        rig.kernel.link_down()
        rig.watcher.dumped = (False, False)
        rig.watcher.queue.put_nowait(EventsLost("notification socket error: No buffer space"))
        await rig.until("FAULT", lambda: rig.runner.instance.state is State.FAULT)
        assert rig.runner.eligibility_reason == "interface eth0 is down"
