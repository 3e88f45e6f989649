"""Contenders by name, so the command line and the results speak the same names."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.contenders import Contender, ContenderError
from benchmarks.contenders.haproxy import HaproxyContender
from benchmarks.contenders.keepalived import KeepalivedContender, KeepalivedSettings
from benchmarks.contenders.pgvip import lab_variant, stock_variant

RW_CONTENDERS = ("pgvip-lab", "pgvip-stock", "keepalived", "haproxy")
RO_CONTENDERS = ("haproxy", "pgvip-ro")
# Asked for but not runnable against this lab: reported, never faked.
UNAVAILABLE = {
    "vip-manager": (
        "Debian 12's vip-manager 1.0.2 reads the leader key through etcd's v2 keys API only "
        "(/v2/keys), while the lab's Patroni 4.1 keeps it in etcd3's v3 keyspace (and etcd 3.4 "
        "serves v2 only with --enable-v2): it cannot see Patroni's leader here"
    )
}


def make(name: str, *, keepalived: KeepalivedSettings | None = None) -> Contender:
    if name == "pgvip-lab":
        return lab_variant()
    if name == "pgvip-stock":
        return stock_variant()
    if name == "pgvip-ro":
        return lab_variant(ro=True)
    if name == "keepalived":
        return KeepalivedContender(keepalived)
    if name == "haproxy":
        return HaproxyContender()
    if name in UNAVAILABLE:
        raise ContenderError(f"{name}: {UNAVAILABLE[name]}")
    raise ContenderError(
        f"unknown contender {name!r}; choose from {', '.join(RW_CONTENDERS + RO_CONTENDERS)}"
    )


def make_all(
    names: Sequence[str], *, keepalived: KeepalivedSettings | None = None
) -> list[Contender]:
    return [make(n, keepalived=keepalived) for n in names]
