"""Preflight checks for the dataplane: the capabilities it needs and whether interfaces exist.

Pure stdlib (no pyroute2), so `pgvip run` can fail fast with a readable message before
opening any netlink or raw socket.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from pathlib import Path

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13

# Why each capability is needed, in the words an operator will act on.
REQUIRED_CAPABILITIES: dict[str, tuple[int, str]] = {
    "CAP_NET_ADMIN": (CAP_NET_ADMIN, "add and remove VIP addresses (netlink)"),
    "CAP_NET_RAW": (CAP_NET_RAW, "raw VRRP sockets and GARP / unsolicited NA"),
}

# Capabilities are per thread on Linux; /proc/self is the thread-group leader, which can
# differ from the calling thread, so prefer the caller's own view.
_STATUS_PATHS = (Path("/proc/thread-self/status"), Path("/proc/self/status"))


class PreflightError(RuntimeError):
    """The process cannot run the dataplane here; `problems` lists every reason found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def parse_effective_capabilities(status_text: str) -> int:
    """The CapEff bit mask from the text of /proc/<pid>/status."""
    for line in status_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "CapEff":
            try:
                return int(value.strip(), 16)
            except ValueError:
                raise PreflightError([f"unreadable CapEff value {value.strip()!r}"]) from None
    raise PreflightError(["no CapEff line in the process status (is /proc mounted?)"])


def missing_capabilities(
    cap_eff: int, required: Iterable[str] = REQUIRED_CAPABILITIES
) -> list[str]:
    """Names among `required` whose bit is clear in `cap_eff`, in the order given."""
    missing = []
    for name in required:
        try:
            bit = REQUIRED_CAPABILITIES[name][0]
        except KeyError:
            raise ValueError(f"unknown capability {name!r}") from None
        if not cap_eff & (1 << bit):
            missing.append(name)
    return missing


def _read_status() -> str:
    for path in _STATUS_PATHS:
        try:
            return path.read_text()
        except OSError:
            continue
    raise PreflightError(["cannot read /proc/thread-self/status or /proc/self/status"])


def check_capabilities(status_text: str | None = None) -> list[str]:
    """Missing capabilities among CAP_NET_ADMIN and CAP_NET_RAW (empty list: all present).

    `status_text` defaults to the calling thread's /proc status.
    """
    text = _read_status() if status_text is None else status_text
    return missing_capabilities(parse_effective_capabilities(text))


def interface_names() -> list[str]:
    """Interfaces of the current network namespace, by index (lo first)."""
    return [name for _, name in sorted(socket.if_nameindex())]


def interface_exists(ifname: str) -> bool:
    """True if `ifname` exists in the calling thread's network namespace."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


def describe_missing_interface(ifname: str, available: Iterable[str] | None = None) -> str:
    """'interface eth9 does not exist (available: lo, eth0)'."""
    names = interface_names() if available is None else list(available)
    listing = ", ".join(names) if names else "none"
    return f"interface {ifname} does not exist (available: {listing})"


def preflight(ifnames: Iterable[str] = (), status_text: str | None = None) -> list[str]:
    """Every reason the dataplane cannot run, as sentences; empty when all is well."""
    problems = []
    for name in check_capabilities(status_text):
        why = REQUIRED_CAPABILITIES[name][1]
        problems.append(
            f"missing {name}, needed to {why} (run as root or grant it, "
            "e.g. systemd AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)"
        )
    available = interface_names()
    for ifname in dict.fromkeys(ifnames):
        if ifname not in available:
            problems.append(describe_missing_interface(ifname, available))
    return problems


def require(ifnames: Iterable[str] = ()) -> None:
    """Raise PreflightError listing every problem `preflight` finds."""
    problems = preflight(ifnames)
    if problems:
        raise PreflightError(problems)
