"""Link and address notifications from rtnetlink, so the daemon can reconcile at once.

`AddressWatcher` subscribes before it dumps the links, so no change falls between the two, and
turns a lost batch (socket overrun) into `EventsLost` rather than silence.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from pgvip.dataplane.addresses import (
    IFF_LOWER_UP,
    IFF_UP,
    PGVIP_IFA_PROTO,
    VipInterface,
    connect,
    error_code,
    message_interface,
    netlink_error,
)


@dataclass(frozen=True)
class LinkChanged:
    """A link appeared, changed state, or was removed."""

    ifname: str
    index: int
    up: bool  # administratively up (IFF_UP)
    carrier: bool  # lower layer up (IFF_LOWER_UP)
    removed: bool = False


@dataclass(frozen=True)
class AddressChanged:
    """An address was added to or removed from a link."""

    ifname: str | None  # None if the link was unknown (already gone)
    index: int
    address: VipInterface
    added: bool
    tagged: bool  # carries PGVIP_IFA_PROTO


@dataclass(frozen=True)
class EventsLost:
    """The kernel dropped notifications (socket overrun): reconcile everything."""

    reason: str


Notification = LinkChanged | AddressChanged | EventsLost

WATCH_GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR


class AddressWatcher:
    """Async iterator of link and address notifications for a namespace (default: current).

    `async with AddressWatcher() as watcher: async for note in watcher: ...`. A link that
    re-announces the same up/carrier state is reported once.
    """

    def __init__(self, netns: str | None = None, *, rcvbuf: int = 1 << 20) -> None:
        self.netns = netns
        self.rcvbuf = rcvbuf
        self._ipr: AsyncIPRoute | None = None
        self._names: dict[int, str] = {}
        self._link_state: dict[int, tuple[bool, bool]] = {}
        self._pending: deque[Notification] = deque()
        self._closed = False

    async def __aenter__(self) -> AddressWatcher:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def open(self) -> None:
        self._closed = False
        ipr = await connect(self.netns, groups=WATCH_GROUPS, rcvbuf=self.rcvbuf)
        try:
            # Subscribe before the dump, so that no change falls between the two.
            await ipr.bind()
            links = [link async for link in await ipr.link("dump")]
        except (NetlinkError, OSError) as exc:
            ipr.close()
            raise netlink_error("subscribing to link and address notifications", exc) from exc
        self._ipr = ipr
        self._names = {}
        self._link_state = {}
        for link in links:
            self._names[link["index"]] = link.get("ifname")
            self._link_state[link["index"]] = self._state(link)

    def close(self) -> None:
        self._closed = True
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def ifname(self, index: int) -> str | None:
        return self._names.get(index)

    def link_state(self, ifname: str) -> tuple[bool, bool] | None:
        """(up, carrier) of `ifname` as last seen, or None if it does not exist."""
        for index, name in self._names.items():
            if name == ifname:
                return self._link_state.get(index, (False, False))
        return None

    def __aiter__(self) -> AddressWatcher:
        return self

    async def __anext__(self) -> Notification:
        while not self._pending:
            if self._closed or self._ipr is None:
                raise StopAsyncIteration
            try:
                batch = [msg async for msg in self._ipr.get()]
            except (NetlinkError, OSError) as exc:
                if self._closed:
                    raise StopAsyncIteration from exc
                # An overrun (ENOBUFS) leaves the socket unusable: start over, and say so.
                code = error_code(exc)
                self._ipr.close()
                self._ipr = None
                await self.open()
                return EventsLost(f"notification socket error: {os.strerror(code or 0)}")
            for msg in batch:
                note = self._translate(msg)
                if note is not None:
                    self._pending.append(note)
        return self._pending.popleft()

    @staticmethod
    def _state(link: Any) -> tuple[bool, bool]:
        flags = link.get("flags") or 0
        return bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP)

    def _translate(self, msg: Any) -> Notification | None:
        event = msg.get("event")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            index = msg["index"]
            name = msg.get("ifname") or self._names.get(index) or str(index)
            state = self._state(msg)
            if event == "RTM_DELLINK":
                self._names.pop(index, None)
                self._link_state.pop(index, None)
                return LinkChanged(name, index, False, False, removed=True)
            self._names[index] = name
            if self._link_state.get(index) == state:
                return None
            self._link_state[index] = state
            return LinkChanged(name, index, state[0], state[1])
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            if msg.get("family") not in (socket.AF_INET, socket.AF_INET6):
                return None
            index = msg["index"]
            return AddressChanged(
                ifname=self._names.get(index),
                index=index,
                address=message_interface(msg),
                added=event == "RTM_NEWADDR",
                tagged=msg.get("proto") == PGVIP_IFA_PROTO,
            )
        return None
