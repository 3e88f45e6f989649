"""pgvip.status.sdnotify: datagrams as systemd would receive them, on a real AF_UNIX socket
(a path in a tmp dir, and an abstract name), plus the watchdog and the liveness check."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvip.status.sdnotify import Liveness, SdNotifier, SdNotifyError, sd_notify


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the NOTIFY_SOCKET value

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        yield FakeSystemd(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"t-status-notify-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        yield FakeSystemd(sock, "@" + name)
    finally:
        sock.close()


def test_ready_is_not_sent_before_ready(systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": systemd.address})
    assert n.status("rw BACKUP")
    assert systemd.messages() == ["STATUS=rw BACKUP"]
    assert not n.is_ready
    assert n.ready("rw MASTER")
    assert systemd.messages() == ["READY=1\nSTATUS=rw MASTER"]
    # Once is enough: a second ready() (every later reconcile) sends nothing.
    assert not n.ready()
    assert systemd.messages() == []


def test_abstract_socket(abstract_systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": abstract_systemd.address})
    assert n.ready()
    assert abstract_systemd.messages() == ["READY=1"]


def test_status_is_sent_only_when_it_changes(systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": systemd.address})
    n.status("rw MASTER, 2/2 backends")
    n.status("rw MASTER, 2/2 backends")
    n.status("rw MASTER, 1/2 backends")
    assert systemd.messages() == [
        "STATUS=rw MASTER, 2/2 backends",
        "STATUS=rw MASTER, 1/2 backends",
    ]


def test_status_cannot_inject_other_assignments(systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": systemd.address})
    n.status("reason from a peer\nREADY=1")
    assert systemd.messages() == ["STATUS=reason from a peer READY=1"]


def test_reload_then_ready_again(systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": systemd.address})
    n.ready()
    n.reloading()
    n.ready()
    n.stopping("releasing VIPs")
    msgs = systemd.messages()
    assert msgs[0] == "READY=1"
    assert msgs[1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert int(msgs[1].split("=")[-1]) > 0
    assert msgs[2:] == ["READY=1", "STOPPING=1\nSTATUS=releasing VIPs"]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = SdNotifier({})
    assert not n.enabled
    assert not n.ready()
    assert not n.status("x")
    assert n.is_ready  # the daemon's own bookkeeping still advances


def test_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert not n.ready()
    assert n.last_error is not None and "gone" in n.last_error
    assert not n.is_ready  # so the next ready() retries


def test_sd_notify_rejects_unsupported_addresses() -> None:
    with pytest.raises(SdNotifyError, match="not supported"):
        sd_notify("READY=1", "vsock:2:1234")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "4000000"}, 4.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "123"}, 4.0),
        ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "124"}, None),  # for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_env(env: dict[str, str], expected: float | None) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": "/run/x", **env}, pid=123)
    assert n.watchdog_interval == expected


async def test_watchdog_pings_only_while_healthy(systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "20000"})  # 10 ms period
    problem: list[str | None] = [None]
    task = asyncio.get_running_loop().create_task(n.watchdog(lambda: problem[0]))
    try:
        await asyncio.sleep(0.1)
        healthy = systemd.messages()
        assert len(healthy) >= 3 and set(healthy) == {"WATCHDOG=1"}
        problem[0] = "task reconcile ended"
        await asyncio.sleep(0.03)
        systemd.messages()  # drop a ping that may have raced with the change
        await asyncio.sleep(0.1)
        assert systemd.messages() == []
        problem[0] = None
        await asyncio.sleep(0.1)
        assert "WATCHDOG=1" in systemd.messages()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_watchdog_returns_when_systemd_wants_none(systemd: FakeSystemd) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": systemd.address})
    await asyncio.wait_for(n.watchdog(), 1.0)
    assert systemd.messages() == []


async def test_liveness_notices_a_dead_task() -> None:
    live = Liveness()

    async def crash() -> None:
        raise RuntimeError("boom")

    async def forever() -> None:
        await asyncio.sleep(3600)

    ok = asyncio.get_running_loop().create_task(forever(), name="vrrp-rw")
    bad = asyncio.get_running_loop().create_task(crash(), name="reconcile")
    live.watch(ok)
    assert live.problem() is None
    live.watch(bad)
    await asyncio.gather(bad, return_exceptions=True)
    problem = live.problem()
    assert problem is not None and "reconcile" in problem and "boom" in problem
    ok.cancel()
    await asyncio.gather(ok, return_exceptions=True)


def test_liveness_notices_a_stale_heartbeat() -> None:
    now = [100.0]
    live = Liveness(clock=lambda: now[0])
    live.expect("reconcile", 6.0)
    now[0] = 105.0
    assert live.problem() is None
    live.beat("reconcile")
    now[0] = 110.0
    assert live.problem() is None
    now[0] = 111.5
    assert live.problem() == "no reconcile heartbeat for 6.5s (max 6s)"
