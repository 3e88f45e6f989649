"""VIP addresses on an interface through rtnetlink (pyroute2), each tagged with IFA_PROTO.

The tag lets pgvip find and release its own addresses after a crash. The rtnetlink helpers here
(`connect`, `netlink_error`, ...) are shared with `address_watcher`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pgvip.dataplane.privileges import describe_missing_interface

VipInterface = IPv4Interface | IPv6Interface
IPAddress = IPv4Address | IPv6Address

PGVIP_IFA_PROTO = 0x9A
IFA_F_NODAD = 0x02
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000

_PERMISSION_CODES = (errno.EPERM, errno.EACCES)


class AddressError(RuntimeError):
    """Adding, removing or listing addresses failed; the message says what and why.

    `code` is the errno behind it, when there is one.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


async def connect(netns: str | None, **kwargs: Any) -> AsyncIPRoute:
    """An open AsyncIPRoute; errors opening it (pyroute2 opens lazily) become AddressError."""
    where = "the current network namespace" if netns is None else f"network namespace {netns}"
    # pyroute2's default flags would silently create a missing namespace.
    ipr = AsyncIPRoute(**kwargs) if netns is None else AsyncIPRoute(netns=netns, flags=0, **kwargs)
    try:
        await ipr.setup_endpoint()
    except FileNotFoundError:
        ipr.close()
        raise AddressError(f"network namespace {netns} does not exist", code=errno.ENOENT) from None
    except PermissionError as exc:
        ipr.close()
        raise AddressError(
            f"cannot open a netlink socket in {where}: permission denied ({exc.strerror})",
            code=exc.errno,
        ) from exc
    except OSError as exc:
        ipr.close()
        raise AddressError(
            f"cannot open a netlink socket in {where}: {exc.strerror}", code=exc.errno
        ) from exc
    return ipr


def _check_vip(vip: object) -> VipInterface:
    if not isinstance(vip, IPv4Interface | IPv6Interface):
        raise TypeError(f"a VIP must be an IPv4Interface or IPv6Interface, got {vip!r}")
    return vip


def message_interface(msg: Any) -> VipInterface:
    """The address (with prefix length) an RTM_*ADDR message is about."""
    # For IPv4, IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on p2p links.
    address = msg.get("local") or msg.get("address")
    return ipaddress.ip_interface(f"{address}/{msg['prefixlen']}")


async def _link_names(ipr: AsyncIPRoute) -> dict[int, str]:
    return {link["index"]: link.get("ifname") async for link in await ipr.link("dump")}


def error_code(exc: BaseException) -> int | None:
    """The errno behind a netlink or OS error, if it has one."""
    if isinstance(exc, NetlinkError):
        return int(exc.code)
    if isinstance(exc, OSError) and isinstance(exc.errno, int):
        return exc.errno
    return None


def netlink_error(
    action: str, exc: NetlinkError | OSError, missing: str | None = None
) -> AddressError:
    """`action` failed with `exc`, as an AddressError; `missing` explains an ENODEV."""
    code = error_code(exc)
    if code in _PERMISSION_CODES:
        return AddressError(f"{action} failed: needs CAP_NET_ADMIN (permission denied)", code=code)
    if code == errno.ENODEV and missing is not None:
        return AddressError(f"{action} failed: {missing}", code=code)
    reason = os.strerror(code) if code else str(exc)
    return AddressError(f"{action} failed: {reason} (errno {code})", code=code)


class AddressManager:
    """The VIPs of one interface, in the current network namespace or in `netns`.

    Use as `async with AddressManager("eth0") as addrs:`. add() and remove() use a cached
    interface index and look the name up again when the kernel says it is gone (the link
    was recreated); listings look it up every time, since a stale index would list nothing.
    """

    def __init__(self, ifname: str, netns: str | None = None) -> None:
        self.ifname = ifname
        self.netns = netns
        self._ipr: AsyncIPRoute | None = None
        self._index: int | None = None

    async def __aenter__(self) -> AddressManager:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    async def open(self) -> None:
        if self._ipr is None:
            self._ipr = await connect(self.netns)
        try:
            await self.ifindex()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        self._index = None

    @property
    def _sock(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise AddressError(f"address manager for {self.ifname} is not open")
        return self._ipr

    def invalidate(self) -> None:
        """Forget the cached interface index (call on a link removal notification)."""
        self._index = None

    async def _fail(self, action: str, exc: NetlinkError | OSError) -> AddressError:
        missing = await self._missing_interface() if error_code(exc) == errno.ENODEV else None
        return netlink_error(action, exc, missing)

    async def _missing_interface(self) -> str:
        try:
            names = list((await _link_names(self._sock)).values())
        except (NetlinkError, OSError):
            names = []
        return describe_missing_interface(self.ifname, names)

    async def _resolve(self) -> int:
        # A dump, not link("get"): pyroute2 0.9.7 leaves the kernel's ACK to a "get" in the
        # socket's unread default queue, one message per call, for as long as the socket lives.
        try:
            names = await _link_names(self._sock)
        except (NetlinkError, OSError) as exc:
            raise netlink_error(f"looking up interface {self.ifname}", exc) from exc
        for index, name in names.items():
            if name == self.ifname:
                self._index = index
                return index
        self._index = None
        raise AddressError(
            describe_missing_interface(self.ifname, names.values()), code=errno.ENODEV
        )

    async def ifindex(self) -> int:
        """The interface index, resolved on first use and after an invalidation."""
        if self._index is None:
            return await self._resolve()
        return self._index

    async def _addr(self, command: str, vip: VipInterface, **extra: Any) -> None:
        kwargs: dict[str, Any] = {
            "address": str(vip.ip),
            "prefixlen": vip.network.prefixlen,
            **extra,
        }
        index = await self.ifindex()
        try:
            await self._sock.addr(command, index=index, **kwargs)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
            # The link was deleted, maybe recreated under the same name with a new index.
            if await self._resolve() == index:
                raise
            await self._sock.addr(command, index=self._index, **kwargs)

    async def add(self, vip: VipInterface) -> bool:
        """Add `vip` tagged PGVIP_IFA_PROTO; True if added now, False if it was already there."""
        vip = _check_vip(vip)
        extra: dict[str, Any] = {"proto": PGVIP_IFA_PROTO}
        if vip.version == 6:
            # A VIP that moves between nodes must be usable at once: DAD would keep it
            # tentative (unusable) for a second or more after every takeover.
            extra["flags"] = IFA_F_NODAD
        try:
            await self._addr("add", vip, **extra)
        except (NetlinkError, OSError) as exc:
            if error_code(exc) == errno.EEXIST:
                return False
            raise await self._fail(f"adding {vip} to {self.ifname}", exc) from exc
        return True

    async def remove(self, vip: VipInterface) -> bool:
        """Remove `vip`; True if removed now, False if it was not there.

        The prefix length must match the one it was added with (the kernel's key).
        """
        vip = _check_vip(vip)
        try:
            await self._addr("del", vip)
        except (NetlinkError, OSError) as exc:
            if error_code(exc) in (errno.EADDRNOTAVAIL, errno.ENOENT):
                return False
            raise await self._fail(f"removing {vip} from {self.ifname}", exc) from exc
        return True

    async def link_usable(self) -> bool:
        """True if the interface exists, is up and has carrier (asked of the kernel now)."""
        try:
            links = [link async for link in await self._sock.link("dump")]
        except (NetlinkError, OSError) as exc:
            raise netlink_error(f"looking up interface {self.ifname}", exc) from exc
        for link in links:
            if link.get("ifname") == self.ifname:
                flags = link.get("flags") or 0
                return bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP)
        return False

    async def _dump(self) -> list[Any]:
        # Re-resolve on every listing: a stale index would silently list nothing.
        index = await self._resolve()
        try:
            return [msg async for msg in await self._sock.addr("dump", index=index)]
        except (NetlinkError, OSError) as exc:
            raise netlink_error(f"listing addresses of {self.ifname}", exc) from exc

    async def owned(self) -> set[VipInterface]:
        """Addresses on the interface tagged PGVIP_IFA_PROTO (ours, even from a past run)."""
        return {
            message_interface(msg)
            for msg in await self._dump()
            if msg.get("proto") == PGVIP_IFA_PROTO
        }

    async def addresses(self) -> set[VipInterface]:
        """Every address on the interface, tagged or not."""
        return {message_interface(msg) for msg in await self._dump()}

    async def has(self, vip: VipInterface) -> bool:
        """True if `vip` (address and prefix length) is on the interface, tagged or not."""
        vip = _check_vip(vip)
        return vip in await self.addresses()


@dataclass(frozen=True)
class ReleasedAddress:
    """One address `release_all` removed."""

    ifname: str
    address: VipInterface

    def __str__(self) -> str:
        return f"{self.address} on {self.ifname}"


async def release_all(
    ifname: str,
    netns: str | None = None,
    extra_ifnames: Iterable[str] = ("lo",),
    only: Collection[IPAddress] | None = None,
) -> list[ReleasedAddress]:
    """Remove every PGVIP_IFA_PROTO-tagged address from `ifname` and `extra_ifnames`; with
    `only`, just those of these addresses (one instance's VIPs on a host that runs two).

    For `pgvip release` (systemd ExecStopPost): untagged addresses are never touched.
    A missing `ifname` raises AddressError; a missing extra interface is skipped.
    """
    released: list[ReleasedAddress] = []
    ipr = await connect(netns)
    try:
        try:
            names = await _link_names(ipr)
        except (NetlinkError, OSError) as exc:
            raise netlink_error("listing interfaces", exc) from exc
        by_name = {name: index for index, name in names.items()}
        if ifname not in by_name:
            raise AddressError(
                describe_missing_interface(ifname, names.values()), code=errno.ENODEV
            )
        wanted = {by_name[name]: name for name in (ifname, *extra_ifnames) if name in by_name}
        try:
            messages = [msg async for msg in await ipr.addr("dump")]
        except (NetlinkError, OSError) as exc:
            raise netlink_error("listing addresses", exc) from exc
        for msg in messages:
            if msg.get("proto") != PGVIP_IFA_PROTO or msg["index"] not in wanted:
                continue
            vip = message_interface(msg)
            if only is not None and vip.ip not in only:
                continue
            name = wanted[msg["index"]]
            try:
                await ipr.addr(
                    "del", index=msg["index"], address=str(vip.ip), prefixlen=vip.network.prefixlen
                )
            except NetlinkError as exc:
                if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT):
                    continue  # gone meanwhile (a link flap): already released
                raise netlink_error(f"removing {vip} from {name}", exc) from exc
            released.append(ReleasedAddress(name, vip))
    finally:
        ipr.close()
    return released
