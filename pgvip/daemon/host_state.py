"""What a daemon claims on its host so that a second pgvip instance (another Patroni cluster)
cannot take it: its instance name, its VRIDs per interface, and its VIPs (`host_claims`).

A claim another instance already holds is a start-up error (exit 2), said in one line: two
daemons with one `instance.name` would share nftables tables, and two with one VRID on one
interface would take each other's adverts for a peer's. The VIP claims tell a starting
instance which tagged addresses on the interface are another live instance's, not leftovers of
its own earlier run.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface

from pgvip.config import Config
from pgvip.dataplane.host_claims import Claim, ClaimTaken, held
from pgvip.naming import CLAIM_PREFIX, StateNames, vrid_claim

VipInterface = IPv4Interface | IPv6Interface


class HostStateError(RuntimeError):
    """Another pgvip instance in this network namespace holds what this one needs."""


def claim_instance(names: StateNames) -> Claim:
    """The daemon's own name, held for its life."""
    try:
        return Claim(names.instance_claim)
    except OSError as exc:
        raise HostStateError(f"cannot claim instance {names.label}: {exc}") from exc
    except ClaimTaken:
        if names.instance is None:
            raise HostStateError(
                "another pgvip instance without instance.name is running on this host (in "
                "this network namespace): give each instance its own [instance] name "
                "(docs/deployment.md, 'Two clusters on one host')"
            ) from None
        raise HostStateError(
            f"another pgvip instance named {names.instance!r} is running on this host (in this "
            "network namespace): each instance needs its own [instance] name"
        ) from None


def _vip_claim(interface: str, vip: VipInterface) -> str:
    return f"{CLAIM_PREFIX}vip/{interface}/{vip.ip}"


def _engine_claims(cfg: Config) -> list[tuple[str, str]]:
    """(claim, what it is for the message) for the VRIDs and VIPs of `cfg`."""
    ifname = cfg.vrrp.interface
    wanted: list[tuple[str, str]] = []
    for key, vip, vrid in (("rw", cfg.rw.vip, cfg.rw.vrid), ("ro", cfg.ro.vip, cfg.ro.vrid)):
        if vip is None:
            continue
        wanted.append((vrid_claim(ifname, vip.version, vrid), f"{key}.vrid {vrid} on {ifname}"))
        wanted.append((_vip_claim(ifname, vip), f"{key}.vip {vip.ip} on {ifname}"))
    return wanted


def check_reload(new: Config, running: Config) -> None:
    """Raise HostStateError if `new` needs a VRID or VIP another instance holds, before the
    running engine (which holds `running`'s) is stopped for it."""
    held_now = {name for name, _ in _engine_claims(running)}
    release(_claim([w for w in _engine_claims(new) if w[0] not in held_now]))


def claim_engine(cfg: Config) -> list[Claim]:
    """The VRIDs (per interface and family) and VIPs of `cfg`; all or none."""
    return _claim(_engine_claims(cfg))


def _claim(wanted: list[tuple[str, str]]) -> list[Claim]:
    claims: list[Claim] = []
    try:
        for name, what in wanted:
            try:
                claims.append(Claim(name))
            except OSError as exc:
                raise HostStateError(f"cannot claim {what}: {exc}") from exc
            except ClaimTaken:
                raise HostStateError(
                    f"{what} is already used by another pgvip instance on this host: two "
                    "clusters on one host need different VRIDs and VIPs"
                ) from None
    except BaseException:
        release(claims)
        raise
    return claims


def release(claims: Iterable[Claim]) -> None:
    for claim in claims:
        with contextlib.suppress(OSError):
            claim.release()


def others_vips(interface: str, claims: Iterable[Claim]) -> set[str]:
    """The VIP addresses on `interface` that another live instance claims (as text)."""
    ours = {c.name for c in claims}
    head = f"{CLAIM_PREFIX}vip/{interface}/"
    return {name[len(head) :] for name in held(head) if name not in ours}


def _port_busy(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def conflicts(cfg: Config) -> list[str]:
    """For `check-config`: what another running instance on this host already holds, that
    `run` would refuse (exit 2). Nothing is checked while this instance itself runs here (its
    own claims and port would look like conflicts), and nothing is kept bound."""
    names = StateNames(cfg.instance.name)
    try:
        Claim(names.instance_claim).release()
    except ClaimTaken:
        return []
    found: list[str] = []
    try:
        release(claim_engine(cfg))
    except HostStateError as exc:
        found.append(str(exc))
    host, port = str(cfg.status.listen), cfg.status.port
    if _port_busy(host, port):
        found.append(
            f"status.port {port} is already in use on {host} (another pgvip instance, or "
            "Patroni's REST API?): each instance on a host needs its own status.port"
        )
    return found
