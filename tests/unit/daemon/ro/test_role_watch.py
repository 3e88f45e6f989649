"""RoleWatch against a real aiohttp stand-in of the local /patroni: RO eligibility with rise/fall,
the role's priority fed before eligibility, error logging, and the effect on a real VrrpInstance."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Interface

import pytest

from pgvip.daemon.ro.role_watch import RoleWatch, RoleWatchError, observe_status
from pgvip.patroni.client import PatroniClient
from pgvip.patroni.verdict import (
    Observation,
    PatroniResponseError,
    PatroniStatus,
    PatroniUnavailable,
    Verdict,
)
from pgvip.policy.eligibility import EligibilityPolicy
from pgvip.vrrp.events import EligibilityChanged, PriorityChanged
from pgvip.vrrp.instance import State, VrrpInstance
from pgvip.vrrp.instance_config import InstanceConfig
from tests.unit.daemon.ro_standins import (
    Clock,
    Cluster,
    RecordingLog,
    cluster,  # noqa: F401  (fixture)
)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[PatroniClient]:  # noqa: F811
    async with PatroniClient(cluster.local.url, timeout=0.5) as c:
        yield c


class Rig:
    def __init__(self, client: PatroniClient, rise: int = 2, fall: int = 2) -> None:
        self.fed: list[object] = []
        self.polled: list[Observation] = []
        self.log = RecordingLog()
        self.clock = Clock()
        self.watch = RoleWatch(
            client.patroni_status,
            EligibilityPolicy(rise, fall, failsafe_keep=False),
            priority_leader=50,
            priority_replica=150,
            interval=1.0,
            feed=self.fed.append,
            log=self.log,
            on_poll=self.polled.append,
            clock=self.clock,
        )

    async def poll(self) -> list[object]:
        before = len(self.fed)
        self.clock.advance(1.0)
        await self.watch.poll_once()
        return self.fed[before:]


def eligibility(events: list[object]) -> list[bool]:
    return [e.eligible for e in events if isinstance(e, EligibilityChanged)]


def priorities(events: list[object]) -> list[int]:
    return [e.priority for e in events if isinstance(e, PriorityChanged)]


async def test_a_running_replica_gets_replica_priority_then_rises(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client)
    first = await rig.poll()
    # Priority first, so the instance's Skew_Time is right when it becomes eligible.
    assert [type(e) for e in first] == [PriorityChanged, EligibilityChanged]
    assert first[0] == PriorityChanged(150, "Patroni role replica: ro.priority_replica 150")
    assert eligibility(first) == [False]  # rise 2: fed once at start, as not yet eligible
    assert isinstance(first[1], EligibilityChanged)
    assert first[1].reason == "/patroni replica, running x1 (rise 2)"
    second = await rig.poll()
    assert second == [EligibilityChanged(True, "/patroni replica, running x2 (rise 2)")]
    assert await rig.poll() == []  # nothing changes: nothing fed
    assert rig.watch.eligible and rig.watch.role == "replica" and rig.watch.priority == 150
    assert rig.watch.status_at == rig.clock.now
    assert rig.watch.last_status is not None and rig.watch.last_status.name == "me"


async def test_a_switchover_changes_the_priority_once_and_keeps_eligibility(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, rise=1)
    await rig.poll()
    cluster.local.role = "primary"
    events = await rig.poll()
    assert events == [PriorityChanged(50, "Patroni role primary: ro.priority_leader 50")]
    assert await rig.poll() == []
    cluster.local.role = "replica"
    assert priorities(await rig.poll()) == [150]
    changes = [kw for lv, e, kw in rig.log.records if e == "RO priority changed"]
    assert [(c["role"], c["priority"], c["previous"]) for c in changes] == [
        ("replica", 150, None),
        ("primary", 50, 150),
        ("replica", 150, 50),
    ]


@pytest.mark.parametrize("role", ["master", "standby_leader"])
async def test_other_leader_roles_get_leader_priority(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
    role: str,
) -> None:
    cluster.local.role = role
    rig = Rig(client)
    assert priorities(await rig.poll()) == [50]


async def test_postgres_not_running_is_ineligible_at_once(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, rise=1, fall=3)
    assert eligibility(await rig.poll()) == [True]
    cluster.local.state = "starting"
    events = await rig.poll()
    assert events == [
        EligibilityChanged(False, "/patroni replica, state 'starting' is not running")
    ]


async def test_unreachable_patroni_drops_eligibility_after_fall_and_keeps_priority(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, rise=1, fall=2)
    await rig.poll()
    cluster.local.patroni_status = 500
    assert await rig.poll() == []  # one unanswered poll: still eligible (fall 2)
    events = await rig.poll()
    assert len(events) == 1 and isinstance(events[0], EligibilityChanged)
    assert not events[0].eligible
    assert events[0].reason.startswith("Patroni unreachable 2 polls (fall 2): /patroni 500")
    await rig.poll()
    assert rig.watch.priority == 150 and rig.watch.errors == {"http_500": 3}
    assert [o.cause for o in rig.polled] == ["ok", "http_500", "http_500", "http_500"]
    assert rig.watch.polls == 4 and rig.watch.instance == "ro"
    warnings = rig.log.events("warning")
    assert warnings == ["RO role watch: cannot ask Patroni"]  # once, not once per poll
    cluster.local.patroni_status = 200
    assert eligibility(await rig.poll()) == [True]
    assert "RO role watch: Patroni answering again" in rig.log.events("info")


async def test_garbage_patroni_answer_is_unknown(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    cluster.local.patroni_raw = b'{"role": 7}'
    rig = Rig(client, rise=1, fall=1)
    events = await rig.poll()
    assert len(events) == 1 and isinstance(events[0], EligibilityChanged)
    assert not events[0].eligible
    assert events[0].reason.startswith("Patroni unreachable 1 poll: /patroni: 'role' must be str")
    assert rig.watch.last is not None and rig.watch.last.cause == "invalid"
    assert rig.watch.priority is None  # no role known: nothing fed


async def test_a_stopped_patroni_is_unknown_not_no(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    rig = Rig(client, rise=1, fall=5)
    await rig.poll()
    assert cluster.local.server is not None
    await cluster.local.server.close()
    await rig.poll()
    assert rig.watch.last is not None
    assert rig.watch.last.verdict is Verdict.UNKNOWN and rig.watch.last.cause == "refused"
    assert rig.watch.eligible


async def test_a_local_refusal_resigns_at_once_and_holds_until_the_port_accepts(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    """/patroni keeps saying running after its PostgreSQL refuses; the director's port watch
    saw our own port refuse: ineligible now, and "running" counts again only once the port
    accepts a connection."""
    rig = Rig(client, rise=1)
    assert eligibility(await rig.poll()) == [True]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rig.watch.member_refused("someone-else", "127.0.0.1", port, "not us")
    assert eligibility(rig.fed) == [True] and rig.watch.port_down is None
    rig.watch.member_refused("me", "127.0.0.1", port, "port: 127.0.0.1 refused")
    assert eligibility(rig.fed) == [True, False]
    assert "resigning the RO VIP" in " ".join(e for _lv, e, _kw in rig.log.records)
    assert await rig.poll() == []  # /patroni says running, the port still refuses: no change
    assert rig.watch.last is not None and rig.watch.last.cause == "port_refused"
    rig.watch.local_refused("127.0.0.1", port, "again")  # a second refusal: no new feed
    assert eligibility(rig.fed) == [True, False]
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        assert eligibility(await rig.poll()) == [True]
        assert rig.watch.port_down is None
    finally:
        server.close()
        await server.wait_closed()


def test_observe_status_maps_answers() -> None:
    running = PatroniStatus("replica", "running", 2, None, None, "p2")
    assert observe_status(running, 5.0, 0.1).verdict is Verdict.YES
    stopped = PatroniStatus("replica", "stopped", 2, None, None, "p2")
    obs = observe_status(stopped, 5.0, 0.1)
    assert (obs.verdict, obs.cause) == (Verdict.NO, "not_running")
    obs = observe_status(PatroniUnavailable("timeout: 127.0.0.1:8008/patroni", "timeout"), 5, 1)
    assert (obs.verdict, obs.cause, obs.at) == (Verdict.UNKNOWN, "timeout", 5)
    obs = observe_status(PatroniResponseError("/patroni: missing 'role'"), 5, 1)
    assert (obs.verdict, obs.cause) == (Verdict.UNKNOWN, "invalid")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"interval": 0}, "interval"),
        ({"priority_leader": 0}, "priority_leader"),
        ({"priority_replica": 255}, "priority_replica"),
    ],
)
def test_bad_settings_are_refused(changes: dict, message: str) -> None:
    async def never() -> PatroniStatus:
        raise AssertionError

    kwargs = {"priority_leader": 50, "priority_replica": 150, "interval": 1.0} | changes
    with pytest.raises(RoleWatchError, match=message):
        RoleWatch(never, EligibilityPolicy(1, 1), feed=print, log=RecordingLog(), **kwargs)


async def test_run_feeds_a_real_instance_which_follows_the_role(
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    instance = VrrpInstance(
        InstanceConfig(
            name="ro",
            vrid=51,
            priority=150,
            advert_int=100,
            vips=(IPv4Interface("10.0.0.100/24"),),
            primary_address=IPv4Address("10.0.0.12"),
        ),
        0.0,
    )
    fed: list[object] = []

    def feed(event: object) -> None:
        fed.append(event)
        instance.handle(event, 10.0)  # type: ignore[arg-type]

    cluster.local.role = "primary"
    watch = RoleWatch(
        client.patroni_status,
        EligibilityPolicy(1, 2, failsafe_keep=False),
        priority_leader=50,
        priority_replica=150,
        interval=0.05,
        feed=feed,
        log=RecordingLog(),
    )
    task = asyncio.create_task(watch.run())
    try:
        async with asyncio.timeout(5):
            while instance.state is not State.BACKUP:
                await asyncio.sleep(0.01)
        assert instance.priority == 50 and "primary" in instance.priority_reason
        cluster.local.role = "replica"
        async with asyncio.timeout(5):
            while instance.priority != 150:
                await asyncio.sleep(0.01)
        cluster.local.state = "stopped"
        async with asyncio.timeout(5):
            while instance.state is not State.FAULT:
                await asyncio.sleep(0.01)
        assert watch.polls >= 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert priorities(fed) == [50, 150]
