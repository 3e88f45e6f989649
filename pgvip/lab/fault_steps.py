"""The steps every fault-matrix row shares (pgvip.lab.fault_matrix, fault_strangers): find
the leader and a replica, mark the moment the fault starts, and wait until the lab has
settled with the RW VIP on Patroni's leader and nowhere else."""

from __future__ import annotations

import time
from typing import Any

from pgvip.lab.demo_report import ScenarioResult
from pgvip.lab.observe import vip_holders
from pgvip.lab.scenarios import RECOVER_TIMEOUT, DemoError, Narrator

HOLD = 8.0  # seconds a fault is held before it is healed
SETTLED = 5.0  # after the heal, the RW VIP must be on the leader alone within this


def leader_of(lab: Any) -> str:
    leader = lab.leader()
    if leader is None:
        raise DemoError("no leader: the fault needs a healthy cluster to start from")
    return str(leader)


def replica_of(lab: Any, leader: str) -> str:
    others = [n for n in lab.layout.node_names() if n != leader]
    if not others:
        raise DemoError("no replica")
    return others[-1]


def ro_director(lab: Any) -> str | None:
    found = vip_holders(lab.layout, lab.layout.ro_vip)
    return found[0] if len(found) == 1 else None


def settle(lab: Any, tl: Narrator, *, timeout: float = SETTLED) -> None:
    """The lab is ready, and the RW VIP is on Patroni's leader and nowhere else."""
    lab.wait_ready(timeout=RECOVER_TIMEOUT, progress=lambda _m: None)
    deadline = time.monotonic() + timeout
    while True:
        leader, holders = lab.leader(), vip_holders(lab.layout, lab.layout.rw_vip)
        if leader is not None and holders == [leader]:
            tl.event(f"settled: RW VIP on leader {leader} only")
            return
        if time.monotonic() >= deadline:
            raise DemoError(f"{timeout:.0f} s after the heal the RW VIP is on "
                            f"{holders or 'nobody'}, Patroni's leader is {leader}")  # fmt: skip
        time.sleep(0.1)


def start_fault(result: ScenarioResult, tl: Narrator, detail: str, text: str) -> None:
    """The fault starts now: what the row's measurements count from."""
    result.detail = detail
    result.t_event = time.monotonic()
    tl.event(text)
