"""What `pgvip run` builds from the configuration alone, built without the network.

`pgvip check-config` and `pgvip run` (pgvip.cli) and a SIGHUP reload (daemon/service.py, before
the running engine is stopped) call `check_buildable`, so a configuration that `run` would
reject on its own is rejected by `check-config` first, with the same message and exit status 2,
and never reaches a constructor deep in the engine as a traceback. The engine itself builds
with the same functions (`instance_config`, `eligibility_policy`, `announce_settings`).

It builds the pure objects the engine makes from the settings: the VRRP instance configs, the
RW eligibility policy, the RO backend settings, an explicitly chosen RO dataplane's support for
the scheduler and forwarding, and the announcement settings. A constructor's refusal becomes a
ConfigProblem naming the section. What the host must provide (the interface and its address,
IPVS for `auto`, privileges, free ports) is checked by `run` at start-up, also with exit 2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from pgvip.config import Config, ConfigError, ConfigProblem
from pgvip.daemon.instance_runner import AnnounceSettings
from pgvip.daemon.ro.balancing import backend_settings
from pgvip.dataplane.balancer import LoadBalancerClass, LoadBalancerError
from pgvip.dataplane.balancer.ipvs import IpvsLoadBalancer
from pgvip.dataplane.balancer.nftables import NftablesLoadBalancer
from pgvip.policy.backends import BackendPolicyError
from pgvip.policy.eligibility import EligibilityError, EligibilityPolicy
from pgvip.vrrp.instance_config import InstanceConfig

__all__ = ["announce_settings", "check_buildable", "eligibility_policy", "instance_config"]

# The source address stands in for the interface's, which only `run` can look up.
_STAND_IN_SOURCE: dict[int, IPv4Address | IPv6Address] = {
    4: IPv4Address("192.0.2.1"),
    6: IPv6Address("fe80::1"),
}
_REFUSALS = (ValueError, EligibilityError, BackendPolicyError, LoadBalancerError)


def eligibility_policy(cfg: Config) -> EligibilityPolicy:
    """The RW VIP's policy: when Patroni's answers make this node eligible, or not."""
    p = cfg.patroni
    return EligibilityPolicy(
        p.rise, p.fall, p.grace, failsafe_keep=p.failsafe_keep, failsafe_max=p.failsafe_max
    )


def announce_settings(cfg: Config) -> AnnounceSettings:
    a = cfg.announce
    return AnnounceSettings(a.garp_count, a.garp_interval, a.garp_refresh)


def instance_config(
    cfg: Config, name: str, vrid: int, priority: int, source: IPv4Address | IPv6Address
) -> InstanceConfig:
    """The VRRP instance `name` ("rw" or "ro") as the engine runs it."""
    vip = cfg.rw.vip if name == "rw" else cfg.ro.vip
    assert vip is not None
    return InstanceConfig(
        name=name,
        vrid=vrid,
        priority=priority,
        advert_int=cfg.vrrp.advert_int,
        vips=(vip,),
        primary_address=source,
        preempt=cfg.vrrp.preempt,
        preempt_delay=cfg.vrrp.preempt_delay,
    )


def _require_psycopg() -> None:
    """ro.probe_sql's probe (daemon/ro/probes.py) imports psycopg, an optional dependency, only
    once it probes: a node without it would fail every probe and never direct."""
    try:
        importlib.import_module("psycopg")
    except ImportError as exc:  # not installed, or installed without a libpq it can load
        raise ValueError(
            f"probe_sql = true needs psycopg, which cannot be imported ({exc}): "
            "install pgvip[sql] (and libpq5), or set probe_sql = false"
        ) from None


def check_buildable(cfg: Config) -> None:
    """Raise ConfigError listing what `run` could not build from `cfg`."""
    problems: list[ConfigProblem] = []
    where = str(cfg.path) if cfg.path else "config"

    def attempt(section: str, build: Callable[[], object]) -> None:
        try:
            build()
        except _REFUSALS as exc:
            problems.append(ConfigProblem(section, where, None, f"[{section}]: {exc}"))

    source = cfg.vrrp.unicast_src or _STAND_IN_SOURCE[cfg.rw.vip.version]
    attempt("rw", lambda: instance_config(cfg, "rw", cfg.rw.vrid, cfg.rw.priority, source))
    attempt("patroni", lambda: eligibility_policy(cfg))
    attempt("announce", lambda: announce_settings(cfg))
    ro = cfg.ro
    if ro.vip is not None:
        ro_vip = ro.vip
        attempt("ro", lambda: instance_config(cfg, "ro", ro.vrid, ro.priority_replica, source))
        attempt("ro", lambda: backend_settings(ro, ro_vip.ip))
        classes: dict[str, LoadBalancerClass] = {
            "ipvs": IpvsLoadBalancer,
            "nftables": NftablesLoadBalancer,
        }
        chosen = classes.get(ro.dataplane)
        if chosen is not None:
            attempt("ro", lambda: chosen.check(ro.scheduler, ro.forwarding, ro.persistence_timeout))
        if ro.probe_sql:
            attempt("ro", _require_psycopg)
    if problems:
        raise ConfigError(problems)
