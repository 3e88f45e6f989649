"""What a client's SYN meets during an RW handoff, asked of every host by its MAC (a client
whose ARP cache still names the old holder sends exactly there): the holder accepts, every
other pgvip node answers with a reset (the stale-ARP guard), nobody drops it silently, and
never do two hosts accept at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from pgvip.lab.syn_probe import probe
from tests.integration.daemon.conftest import VIP, DaemonLab, wait_for, wait_holder
from tests.integration.netlab import start_in_netns

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


class SynSampler:
    """From host c, one SYN to each of a and b by MAC, again and again; (t, {host: outcome})."""

    def __init__(self, dlab: DaemonLab) -> None:
        self.macs = {h: dlab.net.mac(h) for h in ("a", "b")}
        self.ns = dlab.net.ns("c")
        self.rounds: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            seen = {h: probe("eth0", mac, VIP, PORT, timeout=0.3) for h, mac in self.macs.items()}
            if sum(o == "accept" for o in seen.values()) > 1:
                # Asked one after the other: ask again in reverse order; two accepts again
                # means the two hosts really accepted at the same time.
                again = {h: probe("eth0", self.macs[h], VIP, PORT) for h in reversed(self.macs)}
                seen = {h: ("accept" if again[h] == "accept" and seen[h] == "accept" else again[h])
                        for h in seen}  # fmt: skip
            self.rounds.append((t, seen))
            self._stop.wait(0.01)

    def __enter__(self) -> SynSampler:
        self._future = start_in_netns(self.ns, self._run)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._future.result(10)

    def outcomes(self, host: str) -> list[str]:
        return [seen[host] for _, seen in self.rounds]


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
    with SynSampler(dlab) as sampler:
        time.sleep(0.5)
        for old, new, holder in ((a, b, "b"), (b, a, "a")):
            old.set_primary(503)  # Patroni's order: the old primary says no first
            time.sleep(0.3)
            new.set_primary(200)
            wait_holder(dlab, [holder], timeout=5)
            time.sleep(0.5)
    rounds = sampler.rounds
    assert len(rounds) > 20, f"only {len(rounds)} probe rounds"
    both = [(t, seen) for t, seen in rounds if list(seen.values()).count("accept") > 1]
    assert not both, f"two hosts accepted at once: {both[:3]}"
    for host in ("a", "b"):
        outcomes = sampler.outcomes(host)
        assert "accept" in outcomes and "reset" in outcomes, (host, set(outcomes))
        # Never silently dropped: a client there would wait out its connect timeout.
        assert "silent" not in outcomes, f"{host} dropped a SYN: {outcomes.count('silent')}x"
    # Somewhere in each handoff neither accepted: both reset, which a client retries at once.
    assert any(set(seen.values()) == {"reset"} for _, seen in rounds)


def test_without_the_guard_the_old_holder_drops_silently(dlab: DaemonLab) -> None:
    """The control: what the guard changes (so the test above can fail)."""
    a, b = _cluster(dlab, announce={"garp_count": 2, "garp_interval": 1.1, "reset_stale": False})
    with SynSampler(dlab) as sampler:
        time.sleep(0.3)
        a.set_primary(503)
        time.sleep(0.6)
    outcomes = sampler.outcomes("a")
    assert outcomes[0] == "accept"
    assert "silent" in outcomes, set(outcomes)
    assert not any(_guarded(dlab, h) for h in ("a", "b"))
