"""pgvip itself, started by the lab's own machinery (`Lab.start(node, "pgvip")`: the `pgvip` user
with only CAP_NET_ADMIN + CAP_NET_RAW) with a configuration rendered per variant: the lab's
fast settings, or the shipped defaults (advert_int 100, poll_interval 0.25, priority 254)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.contenders import (
    Contender,
    ContenderError,
    Description,
    Endpoint,
    holder_problem,
    require_released,
)
from pgvip.lab import render
from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import PG_PORT

# The shipped defaults (deploy/pgvip.toml and pgvip.config) where the lab sets its own values;
# None removes the lab's key, so pgvip's default applies (rw.priority 254).
STOCK_OVERRIDES: dict[str, Any] = {"advert_int": 100, "poll_interval": 0.25, "priority": None}


class PgvipContender(Contender):
    """One pgvip per node; `overrides` go to pgvip.lab.render (e.g. {"advert_int": 100})."""

    kind = "vip"

    def __init__(self, name: str, overrides: Mapping[str, Any], summary: str) -> None:
        self.name = name
        self.overrides = dict(overrides)
        self.summary = summary

    @property
    def with_ro(self) -> bool:
        return bool(self.overrides.get("ro"))

    def config_text(self, lab: Lab, node: str) -> str:
        try:
            return render.pgvip_config(lab.layout, node, **self.overrides)
        except render.RenderError as exc:
            raise ContenderError(f"{self.name}: {exc}") from exc

    def start(self, lab: Lab) -> None:
        # The lab starts, records and restarts (in reset()) pgvip only while lab.pgvip is set.
        lab.pgvip = True
        lab.pgvip_overrides = dict(self.overrides)
        try:
            for node in lab.layout.node_names():
                lab.pgvip_config_path(node).write_text(self.config_text(lab, node))
                lab.start(node, "pgvip")
        except (LabError, OSError) as exc:
            raise ContenderError(f"{self.name}: cannot start pgvip: {exc}") from exc

    def stop(self, lab: Lab) -> None:
        if not lab.pgvip:
            return
        try:
            for node in lab.layout.node_names():
                lab.stop(node, "pgvip")
        except LabError as exc:
            raise ContenderError(f"{self.name}: cannot stop pgvip: {exc}") from exc
        finally:
            lab.pgvip = False
            lab.pgvip_overrides = {}
        require_released(lab, self.name)

    def rw_endpoint(self, lab: Lab) -> Endpoint:
        return Endpoint(str(lab.layout.rw_vip), PG_PORT)

    def ro_endpoint(self, lab: Lab) -> Endpoint | None:
        return Endpoint(str(lab.layout.ro_vip), PG_PORT) if self.with_ro else None

    def vip(self, lab: Lab) -> ipaddress.IPv4Address:
        return lab.layout.rw_vip

    def rw_problem(self, lab: Lab, leader: str) -> str | None:
        return holder_problem(lab, lab.layout.rw_vip, leader)

    def ro_problem(self, lab: Lab, replicas: Sequence[str]) -> str | None:
        # Which node directs the RO VIP is pgvip's business; that reads work is checked by SQL.
        if not self.with_ro:
            return "no [ro] section configured"
        return None

    def processes(self, lab: Lab) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for node in lab.layout.node_names():
            pid = lab.pid(node, "pgvip") if lab.pgvip else None
            if pid is None:
                raise ContenderError(f"{self.name}: pgvip is not running on {node}")
            found[node] = [pid]
        return found

    def describe(self, lab: Lab) -> Description:
        node = lab.layout.node_names()[0]
        return Description(
            name=self.name,
            kind=self.kind,
            summary=self.summary,
            files={f"{node}/pgvip.toml": self.config_text(lab, node)},
            notes=[f"render overrides: {self.overrides or 'none (the lab defaults)'}"],
        )


def lab_variant(*, ro: bool = False) -> PgvipContender:
    name = "pgvip-ro" if ro else "pgvip-lab"
    return PgvipContender(
        name,
        {"ro": True} if ro else {},
        f"pgvip as the lab runs it: advert_int {render.LAB_ADVERT_INT} cs, poll_interval "
        f"{render.LAB_POLL_INTERVAL} s" + (", with the [ro] VIP" if ro else ""),
    )


def stock_variant() -> PgvipContender:
    return PgvipContender(
        "pgvip-stock",
        STOCK_OVERRIDES,
        "pgvip with its shipped defaults: advert_int 100 cs, poll_interval 0.25 s "
        "(fast_poll_interval 0.05 s), rw.priority 254",
    )
