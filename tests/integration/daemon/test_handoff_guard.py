"""What a client's SYN meets during an RW handoff, asked of every host by its MAC (a client
whose ARP cache still names the old holder sends exactly there): the holder accepts, every
other pgvip node answers with a reset (the stale-ARP guard), nobody drops it silently, and
never do two hosts accept at once."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from pgvip.lab.accept_sampler import AcceptSampler
from tests.integration.daemon.conftest import VIP, DaemonLab, wait_for, wait_holder

pytestmark = pytest.mark.integration

PORT = 5432
LISTENER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(128)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n"
)


def _listen(dlab: DaemonLab, host: str) -> None:
    """A TCP listener on every address of `host`, as PostgreSQL's listen_addresses = '*'."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", dlab.net.ns(host), sys.executable, "-c", LISTENER]
    )
    dlab.extra_procs.append(proc)


def _sampler(dlab: DaemonLab) -> AcceptSampler:
    """From host c, a SYN to each of a and b by MAC in every round."""
    macs = {h: dlab.net.mac(h) for h in ("a", "b")}
    return AcceptSampler(dlab.net.ns("c"), macs, VIP, PORT, interval=0.01)


def _guarded(dlab: DaemonLab, host: str) -> bool:
    return any(e.get("event") == "stale-ARP guard installed" for e in dlab.nodes[host].log_lines())


def _cluster(dlab: DaemonLab, **overrides: Any) -> tuple[Any, Any]:
    a = dlab.start_standin("a", primary=200)
    b = dlab.start_standin("b", primary=503)
    for host in ("a", "b"):
        _listen(dlab, host)
        dlab.start_pgvip(host, **overrides)
    wait_holder(dlab, ["a"])
    return a, b


def test_switchover_resets_instead_of_dropping_and_never_two_accept(dlab: DaemonLab) -> None:
    a, b = _cluster(dlab)
    wait_for(lambda: _guarded(dlab, "a") and _guarded(dlab, "b"), timeout=10, what="guards")
    with _sampler(dlab) as sampler:
        time.sleep(0.5)
        for old, new, holder in ((a, b, "b"), (b, a, "a")):
            old.set_primary(503)  # Patroni's order: the old primary says no first
            time.sleep(0.3)
            new.set_primary(200)
            wait_holder(dlab, [holder], timeout=5)
            time.sleep(0.5)
    rounds = sampler.rounds
    assert len(rounds) > 20, f"only {len(rounds)} probe rounds"
    assert not sampler.doubles(), f"two hosts accepted at once: {sampler.doubles()[:3]}"
    for host in ("a", "b"):
        outcomes = sampler.outcomes(host)
        assert outcomes["accept"] and outcomes["reset"], (host, outcomes)
        # Never silently dropped: a client there would wait out its connect timeout.
        assert not outcomes["silent"], f"{host} dropped SYNs: {outcomes}"
    # Somewhere in each handoff neither accepted: both reset, which a client retries at once.
    assert any(set(r.outcomes.values()) == {"reset"} for r in rounds)


def test_without_the_guard_the_old_holder_drops_silently(dlab: DaemonLab) -> None:
    """The control: what the guard changes (so the test above can fail)."""
    a, b = _cluster(dlab, announce={"garp_count": 2, "garp_interval": 1.1, "reset_stale": False})
    with _sampler(dlab) as sampler:
        time.sleep(0.3)
        a.set_primary(503)
        time.sleep(0.6)
    assert sampler.rounds[0].outcomes["a"] == "accept"
    assert sampler.outcomes("a")["silent"], sampler.outcomes("a")
    assert not any(_guarded(dlab, h) for h in ("a", "b"))
