"""The "dr" real-server side of the RO engine: a non-director keeps the RO VIP on `lo` (ARP
hidden) so whoever directs can forward to it; the director takes it off."""

from __future__ import annotations

from typing import Any, Protocol

from pgvip.dataplane.balancer import IPAddress
from pgvip.dataplane.balancer.realserver import setup_real_server, teardown_real_server

__all__ = ["LoVip", "LoopbackRealServer", "RealServerHooks"]


class RealServerHooks(Protocol):
    """How a non-director becomes a DR real server for the RO VIP (VIP on lo, ARP hidden)."""

    async def setup(self, vip: IPAddress) -> bool: ...  # True if the VIP was added now

    async def teardown(self, vip: IPAddress) -> bool: ...  # True if it was removed now


class LoopbackRealServer:
    """The real RealServerHooks: `setup_real_server` (pgvip.dataplane.balancer.realserver)
    and its teardown."""

    def __init__(self, *, interface: str | None = None, netns: str | None = None) -> None:
        self.interface = interface
        self.netns = netns

    async def setup(self, vip: IPAddress) -> bool:
        return await setup_real_server(vip, netns=self.netns, interface=self.interface)

    async def teardown(self, vip: IPAddress) -> bool:
        return await teardown_real_server(vip, netns=self.netns)


class LoVip:
    """The RO VIP on lo through `hooks`, remembering what it last managed; errors are logged
    and leave the state unknown, so the next cycle tries again."""

    def __init__(self, hooks: RealServerHooks, vip: IPAddress, *, log: Any) -> None:
        self._hooks = hooks
        self.vip = vip
        self._log = log
        self.on_lo: bool | None = None  # True: VIP on lo, False: not; None: unknown

    async def put_on(self) -> None:
        try:
            added = await self._hooks.setup(self.vip)
        except Exception as exc:
            self.on_lo = None
            self._log.error("cannot put the RO VIP on lo (DR real server)", error=str(exc))
            return
        self.on_lo = True
        if added:
            self._log.info("RO VIP on lo: DR real server of the director", vip=str(self.vip))

    async def take_off(self, *, once: bool = False, why: str = "this node directs") -> None:
        """Remove the VIP from lo; `once`: only if not known to be off already."""
        if once and self.on_lo is False:
            return
        try:
            removed = await self._hooks.teardown(self.vip)
        except Exception as exc:
            self.on_lo = None
            self._log.error("cannot remove the RO VIP from lo", error=str(exc))
            return
        self.on_lo = False
        if removed:
            self._log.info(f"RO VIP removed from lo: {why}", vip=str(self.vip))
