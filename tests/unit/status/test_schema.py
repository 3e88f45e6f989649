"""pgvip.status: transition kinds from the real state machine, the STATUS= line, and the snapshot
TypedDicts kept in step with docs/openapi.yaml."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

import pgvip.status as st
from pgvip.status import REASON_KINDS, status_line
from pgvip.vrrp.actions import TransitionKind
from pgvip.vrrp.events import AdvertReceived, EligibilityChanged, Shutdown, Tick
from pgvip.vrrp.instance import VrrpInstance
from pgvip.vrrp.packet import Advert
from tests.unit.status.samples import make_snapshot
from tests.unit.vrrp.netsim import VIP, VRID, make_config, node_address

OPENAPI = Path(__file__).resolve().parents[3] / "docs" / "openapi.yaml"


def _transitions(actions: list[Any]) -> list[Any]:
    return [a for a in actions if type(a).__name__ == "Transition"]


def _advert(priority: int) -> Advert:
    return Advert(VRID, priority, 100, (VIP.ip,))


# -- reason kinds ------------------------------------------------------------------------


def test_reason_kinds_of_the_real_state_machine() -> None:
    """Every reason text VrrpInstance writes maps to its intended kind, not "other"."""
    seen: dict[str, str] = {}
    inst = VrrpInstance(make_config(1, 200), now=0.0)
    for tr in _transitions(inst.handle(EligibilityChanged(True, "/primary 200"), 0.0)):
        seen[tr.reason] = tr.kind.value
    t = inst.next_deadline()
    assert t is not None
    for tr in _transitions(inst.handle(Tick(), t)):
        seen[tr.reason] = tr.kind.value
    assert inst.state.name == "MASTER"
    # A higher-priority master appears: MASTER -> BACKUP.
    for tr in _transitions(inst.handle(AdvertReceived(_advert(250), node_address(2)), t + 0.1)):
        seen[tr.reason] = tr.kind.value
    # That master resigns (priority 0): BACKUP -> MASTER after Skew_Time.
    inst.handle(AdvertReceived(_advert(0), node_address(2)), t + 0.2)
    for tr in _transitions(inst.handle(Tick(), (inst.next_deadline() or 0) + 0.01)):
        seen[tr.reason] = tr.kind.value
    t = (inst.next_deadline() or 0) + 0.01
    for tr in _transitions(inst.handle(EligibilityChanged(False, "/primary 503"), t)):
        seen[tr.reason] = tr.kind.value
    for tr in _transitions(inst.handle(Shutdown("SIGTERM"), t + 0.1)):
        seen[tr.reason] = tr.kind.value
    assert sorted(set(seen.values())) == sorted(
        {"eligible", "master_down", "higher_priority", "master_resigned", "ineligible", "shutdown"}
    ), seen


def test_preempt_reason_kind() -> None:
    inst = VrrpInstance(make_config(1, 200), now=0.0)
    inst.handle(AdvertReceived(_advert(100), node_address(2)), 0.0)
    inst.handle(EligibilityChanged(True, "ok"), 0.1)
    kinds = []
    for _ in range(5):
        deadline = inst.next_deadline()
        assert deadline is not None
        inst.handle(AdvertReceived(_advert(100), node_address(2)), deadline - 0.01)
        kinds += [tr.kind.value for tr in _transitions(inst.handle(Tick(), deadline))]
        if kinds:
            break
    assert kinds == ["preempt"]


def test_reason_kinds_are_the_transition_kinds() -> None:
    assert tuple(k.value for k in TransitionKind) == REASON_KINDS
    assert len(set(REASON_KINDS)) == len(REASON_KINDS)
    assert "other" in REASON_KINDS  # the metric's fallback label stays in the set


# -- STATUS= line -------------------------------------------------------------------------


def test_status_line_summarises_both_instances_and_backends() -> None:
    assert status_line(make_snapshot()) == "rw MASTER, ro BACKUP, 2/2 backends"
    assert status_line(make_snapshot(ro=False)) == "rw MASTER"


def test_status_line_flags_a_vip_that_disagrees_with_the_election() -> None:
    snap = make_snapshot(ro=False)
    snap["instances"]["rw"]["held"] = False
    assert status_line(snap) == "rw MASTER (VIP missing)"
    snap = make_snapshot(ro=False, rw_state="BACKUP")
    snap["instances"]["rw"]["held"] = True
    assert status_line(snap) == "rw BACKUP (VIP still here)"


def test_status_line_before_ready_and_when_empty() -> None:
    snap = make_snapshot(ro=False)
    snap["pgvip"]["ready"] = False
    assert status_line(snap) == "rw MASTER, starting"
    assert status_line({}) == "no instance"


# -- the snapshot schema is the OpenAPI schema --------------------------------------------

_COMPONENTS = {
    "Snapshot": st.Snapshot,
    "DaemonInfo": st.DaemonInfo,
    "Instances": st.Instances,
    "InstanceInfo": st.InstanceInfo,
    "MasterSeen": st.MasterSeen,
    "TransitionInfo": st.TransitionInfo,
    "PollInfo": st.PollInfo,
    "PatroniInfo": st.PatroniInfo,
    "RoInfo": st.RoInfo,
    "BackendInfo": st.BackendInfo,
}


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    doc = yaml.safe_load(OPENAPI.read_text())
    assert doc["openapi"].startswith("3.1")
    return doc


@pytest.mark.parametrize("name", sorted(_COMPONENTS))
def test_typeddicts_match_openapi_components(openapi: dict[str, Any], name: str) -> None:
    """Same keys, same required keys: the lead builds the TypedDict, clients read the doc."""
    td: Any = _COMPONENTS[name]
    schema = openapi["components"]["schemas"][name]
    assert set(typing.get_type_hints(td)) == set(schema["properties"]), name
    assert set(td.__required_keys__) == set(schema.get("required", [])), name


def _validator(openapi: dict[str, Any]) -> Any:
    root = {"$ref": "#/components/schemas/Snapshot", "components": openapi["components"]}
    return jsonschema_rs.Draft202012Validator(root)


def test_sample_snapshots_validate(openapi: dict[str, Any]) -> None:
    v = _validator(openapi)
    assert v.is_valid(make_snapshot())
    assert v.is_valid(make_snapshot(ro=False))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: s["instances"]["rw"].__setitem__("state", "ACTIVE"),
        lambda s: s["instances"]["rw"].pop("held"),
        lambda s: s["instances"].pop("rw"),
        lambda s: s["instances"]["rw"]["transitions"][0].__setitem__("reason_kind", "free text"),
        lambda s: s["ro"]["backends"][0].__setitem__("state", "up"),
        lambda s: s["patroni"].__setitem__("timeline", "3"),
        lambda s: s.__setitem__("now", None),
    ],
)
def test_schema_rejects_wrong_snapshots(openapi: dict[str, Any], breakage: Any) -> None:
    snap: Any = make_snapshot()
    breakage(snap)
    assert not _validator(openapi).is_valid(snap)
