"""The RO director's real side effects: the "dr" RO VIP on lo of a test namespace (added while
not directing, removed while directing), and the psycopg probe against a real PostgreSQL 15
started as a standby and then as a primary."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from pgvip.daemon.ro.director import Director
from pgvip.daemon.ro.probes import psycopg_probe
from pgvip.dataplane.addresses import AddressManager
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer
from pgvip.patroni.client import PatroniClient
from pgvip.vrrp.actions import Transition
from pgvip.vrrp.states import State
from tests.unit.daemon.ro_standins import (
    Cluster,
    FakeBalancer,
    RecordingLog,
    cluster,  # noqa: F401  (fixture)
    ro_config,
)

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")
TO_MASTER = Transition(State.BACKUP, State.MASTER, "master down", 150)
FROM_MASTER = Transition(State.MASTER, State.BACKUP, "higher priority", 150)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"t-roh-{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


def lo_addresses(ns: str) -> set[str]:
    """address/prefix of every address on lo in `ns`."""
    out = json.loads(run("ip", "-n", ns, "-j", "addr", "show", "dev", "lo").stdout)
    return {f"{a['local']}/{a['prefixlen']}" for link in out for a in link.get("addr_info", [])}


def sysctl(ns: str, key: str) -> str:
    return run("ip", "netns", "exec", ns, "cat", f"/proc/sys/{key}").stdout.strip()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[PatroniClient]:  # noqa: F811
    async with PatroniClient(cluster.local.url, timeout=2.0) as c:
        yield c


async def test_dr_keeps_the_ro_vip_on_lo_only_while_not_directing(
    netns: str,
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    lb = FakeBalancer()
    director = Director(
        ro_config(forwarding="dr"), client, lb, log=RecordingLog(), interface="lo", netns=netns
    )
    await director.step()
    assert "10.0.0.100/32" in lo_addresses(netns)
    async with AddressManager("lo", netns) as lo:  # tagged with IFA_PROTO, so ours
        assert IPv4Interface("10.0.0.100/32") in await lo.owned()
    assert sysctl(netns, "net/ipv4/conf/all/arp_ignore") == "1"
    assert sysctl(netns, "net/ipv4/conf/all/arp_announce") == "2"

    director.on_transition(TO_MASTER)
    await director.step()
    assert "10.0.0.100/32" not in lo_addresses(netns)

    director.on_transition(FROM_MASTER)
    await director.step()
    assert "10.0.0.100/32" in lo_addresses(netns)
    # Someone removes it: the next standby check puts it back.
    run("ip", "-n", netns, "addr", "del", "10.0.0.100/32", "dev", "lo")
    await director.step()
    assert "10.0.0.100/32" in lo_addresses(netns)
    await director.stop()
    assert "10.0.0.100/32" in lo_addresses(netns)  # a real server's set-up outlives us


async def test_director_programs_and_clears_real_nftables(
    netns: str,
    cluster: Cluster,  # noqa: F811
    client: PatroniClient,
) -> None:
    # No dummy driver in this kernel: a veth pair kept inside the namespace.
    run("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    run("ip", "-n", netns, "link", "set", "eth0", "up")
    balancer = NftablesLoadBalancer(interface="eth0", netns=netns)
    director = Director(
        ro_config(poll_interval=0.05), client, balancer, log=RecordingLog(), interface="eth0"
    )
    await director.step()  # start-up clear on an empty namespace is harmless
    director.on_transition(TO_MASTER)
    await director.step()
    await director.step()
    actual = await balancer.actual()
    assert actual is not None
    assert sorted(str(rs.address) for rs in actual.backends) == ["10.0.0.12", "10.0.0.13"]
    assert sysctl(netns, "net/ipv4/ip_forward") == "1"
    cluster.apis["p3"].status = 503
    await director.step()
    await director.step()
    actual = await balancer.actual()
    # Draining (weight 0) has no numgen slot in nftables: only p2 gets new connections.
    assert actual is not None and [str(rs.address) for rs in actual.backends] == ["10.0.0.12"]
    director.on_transition(FROM_MASTER)
    await director.step()
    assert await balancer.actual() is None
    assert sysctl(netns, "net/ipv4/ip_forward") == "0"  # a non-director is no router


# -- a real PostgreSQL ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """One throw-away PostgreSQL 15 on 127.0.0.1, run as the postgres user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()

    def as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("runuser", "-u", "postgres", "--", *args)

    def initdb(self) -> None:
        self.as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self, standby: bool) -> None:
        signal_file = self.data / "standby.signal"
        if standby:
            signal_file.touch()
            shutil.chown(signal_file, "postgres", "postgres")
        else:
            signal_file.unlink(missing_ok=True)
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.root / "log"), "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        run("runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.data),
            "-m", "immediate", "-w", "stop", check=False)  # fmt: skip
        with contextlib.suppress(ProcessLookupError):  # if pg_ctl failed: by PID
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("postgresql-15 is not installed")
    pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="t-roh-pg-"))
    shutil.chown(root, "postgres", "postgres")
    pg = Postgres(root)
    try:
        pg.initdb()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_psycopg_probe_accepts_a_standby_and_refuses_a_primary(
    postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGUSER", "postgres")  # libpq's environment carries the credentials
    monkeypatch.delenv("PGDATABASE", raising=False)
    postgres.start(standby=True)
    result = await psycopg_probe("p2", "127.0.0.1", postgres.port, 1.0)
    assert result.ok, result.reason
    assert result.reason == f"SQL: 127.0.0.1:{postgres.port} in recovery"
    assert result.kind == "sql"
    postgres.stop()

    postgres.start(standby=False)
    result = await psycopg_probe("p2", "127.0.0.1", postgres.port, 1.0)
    assert not result.ok
    assert result.reason == f"SQL: 127.0.0.1:{postgres.port} is not in recovery (a primary)"

    monkeypatch.setenv("PGUSER", "no_such_role")
    result = await psycopg_probe("p2", "127.0.0.1", postgres.port, 1.0)
    assert not result.ok and 'role "no_such_role" does not exist' in result.reason
