"""What one pgvip instance's host-global state is called, so two instances on one host (two
Patroni clusters, `instance.name` set in each) never touch each other's.

Per instance: the three nftables tables (RO director, IPVS masquerade, stale-ARP guard) and the
abstract unix sockets that claim the instance, its VRIDs and the sysctls it set
(`dataplane.host_claims`). Without a name an instance keeps the names pgvip always used
(`pgvip`, `pgvip_ipvs`, `pgvip_guard`); a name adds `-NAME`, and since a name cannot contain
a character that would turn one kind of table into another (`pgvip-guard` is never
`pgvip_guard`), no two instances, named or not, share a table. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Lower case, digits, '_' and '-', starting with a letter or digit; short enough for an nft
# table name and an abstract socket name (108 bytes with the sysctl path in it).
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,23}")
NAME_RULE = "1-24 characters: a-z, 0-9, '_' or '-', starting with a letter or digit"

BALANCER_TABLE = "pgvip"  # ip/ip6 pgvip: the nftables RO director
MASQUERADE_TABLE = "pgvip_ipvs"  # inet pgvip_ipvs: IPVS one-armed NAT
GUARD_TABLE = "pgvip_guard"  # inet pgvip_guard: the stale-ARP guard
_BASES = (BALANCER_TABLE, MASQUERADE_TABLE, GUARD_TABLE)

CLAIM_PREFIX = "pgvip/"  # every abstract socket pgvip binds starts with this


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


@dataclass(frozen=True)
class StateNames:
    """The names of everything host-global that instance `instance` (None: unnamed) owns."""

    instance: str | None = None

    def __post_init__(self) -> None:
        if self.instance is not None and not valid_name(self.instance):
            raise ValueError(f"bad instance name {self.instance!r}: {NAME_RULE}")

    def _table(self, base: str) -> str:
        return base if self.instance is None else f"{base}-{self.instance}"

    @property
    def label(self) -> str:
        """For messages: the name, or "(unnamed)"."""
        return self.instance if self.instance is not None else "(unnamed)"

    @property
    def balancer_table(self) -> str:
        return self._table(BALANCER_TABLE)

    @property
    def masquerade_table(self) -> str:
        return self._table(MASQUERADE_TABLE)

    @property
    def guard_table(self) -> str:
        return self._table(GUARD_TABLE)

    @property
    def instance_claim(self) -> str:
        """Held for the daemon's life: a second daemon with the same name in this network
        namespace is refused (unnamed ones share the empty name)."""
        return f"{CLAIM_PREFIX}instance/{self.instance or ''}"

    def sysctl_claim(self, key: str, before: str) -> str:
        """Held while this instance keeps sysctl `key` changed from `before`."""
        return f"{CLAIM_PREFIX}sysctl/{self.instance or ''}/{key}={before}"


DEFAULT_NAMES = StateNames()


def vrid_claim(interface: str, family: int, vrid: int) -> str:
    """One VRRP router per (interface, family, VRID) on a host: two instances with the same
    VRID on one interface would take each other's adverts for a peer's."""
    return f"{CLAIM_PREFIX}vrid/{interface}/{family}/{vrid}"


def parse_sysctl_claim(claim: str) -> tuple[str | None, str, str] | None:
    """(instance, key, before) of a `sysctl_claim`, or None if it is not one."""
    head = f"{CLAIM_PREFIX}sysctl/"
    if not claim.startswith(head):
        return None
    instance, sep, rest = claim[len(head) :].partition("/")
    key, eq, before = rest.rpartition("=")
    if not sep or not eq or not key:
        return None
    return (instance or None), key, before


def table_instance(name: str) -> tuple[str, str | None] | None:
    """(base, instance) if `name` is a table some pgvip instance owns, else None."""
    for base in _BASES:
        if name == base:
            return base, None
        if name.startswith(f"{base}-") and valid_name(name[len(base) + 1 :]):
            return base, name[len(base) + 1 :]
    return None
