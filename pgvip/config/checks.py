"""Value checks: each converts a typed value or raises Invalid with a message for the user."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pgvip.config.problems import Invalid
from pgvip.units import SizeError, parse_size

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- value checks (each converts a typed value or raises Invalid) ---------------

Check = Callable[[Any], Any]


def int_range(lo: int, hi: int) -> Check:
    def check(v: int) -> int:
        if not lo <= v <= hi:
            raise Invalid(f"must be {lo}-{hi}")
        return v

    return check


def float_range(lo: float, hi: float, *, lo_open: bool = False) -> Check:
    low = f"> {lo:g}" if lo_open else f">= {lo:g}"

    def check(v: float) -> float:
        v = float(v)
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise Invalid(f"must be {low} and <= {hi:g} (seconds)")
        return v

    return check


def choice(*options: str) -> Check:
    def check(v: str) -> str:
        low = v.strip().lower()
        if low in options:
            return low
        close = difflib.get_close_matches(low, options, n=1, cutoff=0.5)
        raise Invalid(f"must be one of {', '.join(options)}", close[0] if close else None)

    return check


def network(v: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(v.strip(), strict=True)
    except ValueError as exc:
        raise Invalid(f"not a network in CIDR form (e.g. 10.22.0.0/24): {exc}") from None


def vip(v: str) -> IPInterface:
    try:
        iface = ipaddress.ip_interface(v.strip())
    except ValueError:
        raise Invalid("not an IPv4 or IPv6 address with an optional /prefix") from None
    ip = iface.ip
    for bad, what in (
        (ip.is_multicast, "a multicast"),
        (ip.is_unspecified, "the unspecified"),
        (ip.is_loopback, "a loopback"),
    ):
        if bad:
            raise Invalid(f"cannot be {what} address")
    net = iface.network
    if isinstance(iface, ipaddress.IPv4Interface) and net.prefixlen < 31:
        if ip == net.network_address:
            raise Invalid(f"is the network address of {net}")
        if ip == net.broadcast_address:
            raise Invalid(f"is the broadcast address of {net}")
    v6 = isinstance(iface, ipaddress.IPv6Interface)
    if v6 and net.prefixlen < 127 and ip == net.network_address:
        raise Invalid(f"is the subnet-router anycast address of {net}")
    return iface


def unicast(v: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(v.strip())
    except ValueError:
        raise Invalid(f"{v!r} is not an IPv4 or IPv6 address (no /prefix here)") from None
    if ip.is_multicast or ip.is_unspecified:
        raise Invalid(f"{ip} must be a unicast address")
    return ip


def unicast_list(v: list[str]) -> tuple[IPAddress, ...]:
    return tuple(unicast(item) for item in v)


def listen(v: str) -> IPAddress:
    try:
        return ipaddress.ip_address(v.strip())
    except ValueError:
        raise Invalid("not an IPv4 or IPv6 address") from None


def url(v: str) -> str:
    v = v.strip()
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8008")
    if parts.username is not None or parts.password is not None:
        raise Invalid(
            "must not contain credentials: use patroni.username and patroni.password_file"
        )
    if parts.query or parts.fragment:
        raise Invalid("must not have a ?query or #fragment")
    if port == 0:
        raise Invalid("port must be 1-65535")
    return v


_IFNAME = re.compile(r"^[^/:\s]{1,15}$")


def ifname(v: str) -> str:
    if not _IFNAME.match(v) or v in (".", ".."):
        raise Invalid("must be an interface name of 1-15 characters without '/', ':' or spaces")
    return v


def instance_name(v: str) -> str:
    from pgvip.naming import NAME_RULE, valid_name

    if not valid_name(v):
        raise Invalid(NAME_RULE)
    return v


def nonempty(v: str) -> str:
    if not v.strip():
        raise Invalid("must not be empty")
    return v


def size(v: int | str) -> int:
    if isinstance(v, int):
        if v < 0:
            raise Invalid("must be >= 0 bytes")
        return v
    try:
        return parse_size(v, case_sensitive=False, fractions=False)
    except SizeError:
        raise Invalid(
            "must be a byte count or a size like 16MB (units B, kB, MB, GB, TB)"
        ) from None
