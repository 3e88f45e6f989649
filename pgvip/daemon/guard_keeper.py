"""Keeps the stale-ARP guard (pgvip.dataplane.stale_guard) installed for the daemon's life."""

from __future__ import annotations

from pgvip.daemon.cadence import Cadence
from pgvip.dataplane.stale_guard import GuardError, StaleGuard
from pgvip.log import Logger

# How often the guard's table is checked (and re-installed if it drifted); each check runs
# `nft list`, so this is not every VIP reconcile.
GUARD_CHECK_INTERVAL = 30.0


async def keep_guard(
    guard: StaleGuard, log: Logger, interval: float = GUARD_CHECK_INTERVAL
) -> None:
    """Install the guard and keep it installed. A failure is reported once per distinct
    reason and retried, never fatal: the VIPs work without the guard, only a client whose ARP
    cache is stale after a VIP moves waits out a lost SYN again."""
    reported: str | None = None
    cadence = Cadence(interval)
    while True:
        try:
            installed = await guard.ensure()
        except GuardError as exc:
            if str(exc) != reported:
                reported = str(exc)
                log.warning(
                    "stale-ARP guard not installed: a client whose ARP cache still points here "
                    "after a VIP moves waits out a lost SYN (announce.reset_stale = false "
                    "turns the guard off)",
                    error=reported,
                )
        else:
            if installed:
                log.info(
                    "stale-ARP guard installed"
                    if guard.installs == 1
                    else "stale-ARP guard was missing or changed, re-installed",
                    table=f"inet {guard.table}",
                    vips=[str(v) for v in guard.vips],
                )
            elif reported is not None:
                log.info("stale-ARP guard installed", table=f"inet {guard.table}")
            reported = None
        await cadence.wait()
