"""The contenders: each knows how to start and stop itself in the lab, where clients reach its
RW (and RO) side, what it holds or routes right now, and the exact configuration it ran with."""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pgvip.lab.cluster import Lab


class ContenderError(RuntimeError):
    """A contender could not be configured, started, stopped or inspected."""


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: an address and a TCP port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Description:
    """What ran, for the report: a one-line summary and every configuration file verbatim."""

    name: str
    kind: str  # "vip" (nodes hold an address) or "proxy" (a separate host forwards)
    summary: str
    files: Mapping[str, str] = field(default_factory=dict)
    notes: Sequence[str] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "summary": self.summary,
            "files": dict(self.files),
            "notes": list(self.notes),
        }


class Contender(abc.ABC):
    """One way of giving clients a stable RW (and maybe RO) address in front of Patroni."""

    name: str
    kind: str

    @abc.abstractmethod
    def start(self, lab: Lab) -> None:
        """Configure and start the contender's processes (returns without waiting for ready)."""

    @abc.abstractmethod
    def stop(self, lab: Lab) -> None:
        """Stop every process it started and leave no address behind."""

    @abc.abstractmethod
    def rw_endpoint(self, lab: Lab) -> Endpoint: ...

    def ro_endpoint(self, lab: Lab) -> Endpoint | None:
        """Where read-only clients connect, or None if this contender has no RO side."""
        return None

    def vip(self, lab: Lab) -> ipaddress.IPv4Address | None:
        """The RW address the nodes hold (sampled for double holders); None for a proxy."""
        return None

    @abc.abstractmethod
    def rw_problem(self, lab: Lab, leader: str) -> str | None:
        """Why the RW side does not point at exactly `leader` now, or None if it does."""

    def ro_problem(self, lab: Lab, replicas: Sequence[str]) -> str | None:
        """Why the RO side does not spread over exactly `replicas` now, or None if it does."""
        return None

    @abc.abstractmethod
    def processes(self, lab: Lab) -> dict[str, list[int]]:
        """PIDs per host (node or proxy) of everything it runs, for the footprint."""

    @abc.abstractmethod
    def describe(self, lab: Lab) -> Description: ...

    def routing(self, lab: Lab) -> tuple[str, ...] | None:
        """For a proxy: the servers its RW side would send a new connection to now."""
        return None


def vip_holders(lab: Lab, vip: ipaddress.IPv4Address) -> list[str]:
    """Nodes that have `vip` on eth0 or lo right now (pgvip.lab.observe.vip_holders)."""
    from pgvip.lab.observe import vip_holders as holders

    return holders(lab.layout, vip)


def require_released(lab: Lab, name: str) -> None:
    """After a VIP contender was stopped with SIGTERM, no node may still hold the RW VIP."""
    left = vip_holders(lab, lab.layout.rw_vip)
    if left:
        raise ContenderError(
            f"{name}: {lab.layout.rw_vip} still on {', '.join(left)} after SIGTERM"
        )


def holder_problem(lab: Lab, vip: ipaddress.IPv4Address, leader: str) -> str | None:
    holders = vip_holders(lab, vip)
    if holders == [leader]:
        return None
    return f"{vip} held by {', '.join(holders) or 'nobody'}, leader is {leader}"
