"""The RO director's phase table: every (phase, input) pair is explicit, and the moves
the director relies on are the ones the table makes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pgvip.daemon.ro.phases import HOLDS_SERVICE, TRANSITIONS, DirectorInput, Phase, next_phase

P = Phase
I = DirectorInput  # noqa: E741

EXPECTED: dict[tuple[Phase, DirectorInput], Phase] = {
    (P.UNCLEARED, I.MASTER): P.WARMING,
    (P.UNCLEARED, I.NOT_MASTER): P.UNCLEARED,
    (P.UNCLEARED, I.WARMED): P.UNCLEARED,
    (P.UNCLEARED, I.CLEARED): P.STANDBY,
    (P.UNCLEARED, I.CLEAR_FAILED): P.UNCLEARED,
    (P.UNCLEARED, I.STOP): P.STOPPED,
    (P.STANDBY, I.MASTER): P.WARMING,
    (P.STANDBY, I.NOT_MASTER): P.STANDBY,
    (P.STANDBY, I.WARMED): P.STANDBY,
    (P.STANDBY, I.CLEARED): P.STANDBY,
    (P.STANDBY, I.CLEAR_FAILED): P.UNCLEARED,
    (P.STANDBY, I.STOP): P.STOPPED,
    (P.WARMING, I.MASTER): P.WARMING,
    (P.WARMING, I.NOT_MASTER): P.UNCLEARED,
    (P.WARMING, I.WARMED): P.DIRECTING,
    (P.WARMING, I.CLEARED): P.WARMING,
    (P.WARMING, I.CLEAR_FAILED): P.WARMING,
    (P.WARMING, I.STOP): P.STOPPED,
    (P.DIRECTING, I.MASTER): P.DIRECTING,
    (P.DIRECTING, I.NOT_MASTER): P.UNCLEARED,
    (P.DIRECTING, I.WARMED): P.DIRECTING,
    (P.DIRECTING, I.CLEARED): P.DIRECTING,
    (P.DIRECTING, I.CLEAR_FAILED): P.DIRECTING,
    (P.DIRECTING, I.STOP): P.STOPPED,
    (P.STOPPED, I.MASTER): P.STOPPED,
    (P.STOPPED, I.NOT_MASTER): P.STOPPED,
    (P.STOPPED, I.WARMED): P.STOPPED,
    (P.STOPPED, I.CLEARED): P.STOPPED,
    (P.STOPPED, I.CLEAR_FAILED): P.STOPPED,
    (P.STOPPED, I.STOP): P.STOPPED,
}


def test_the_table_has_every_pair_and_no_other() -> None:
    assert set(TRANSITIONS) == set(itertools.product(Phase, DirectorInput))


@pytest.mark.parametrize(
    ("phase", "event"), sorted(EXPECTED, key=lambda k: (k[0].value, k[1].value))
)
def test_each_cell(phase: Phase, event: DirectorInput) -> None:
    assert next_phase(phase, event) is EXPECTED[(phase, event)]


def test_only_the_two_term_phases_direct() -> None:
    assert {p for p in Phase if p.directing} == {P.WARMING, P.DIRECTING}


def test_leaving_a_term_always_passes_through_a_clear() -> None:
    # Standing by is reached only from UNCLEARED, and only by a successful clear.
    into_standby = {k for k, v in TRANSITIONS.items() if v is P.STANDBY and k[0] is not P.STANDBY}
    assert into_standby == {(P.UNCLEARED, I.CLEARED)}
    for phase in (P.WARMING, P.DIRECTING):
        assert next_phase(phase, I.NOT_MASTER) in HOLDS_SERVICE


def test_stopped_is_terminal_and_reachable_from_everywhere() -> None:
    for phase in Phase:
        assert next_phase(phase, I.STOP) is P.STOPPED
    assert all(next_phase(P.STOPPED, e) is P.STOPPED for e in DirectorInput)


def test_holds_service_is_every_phase_a_clear_must_end() -> None:
    assert {P.UNCLEARED, P.WARMING, P.DIRECTING} == HOLDS_SERVICE


def test_the_architecture_doc_lists_every_move_out_of_a_phase() -> None:
    doc = (Path(__file__).resolve().parents[4] / "docs/architecture.md").read_text()
    rows = {
        line.split("|")[1].strip().split()[0].strip("`"): line
        for line in doc.splitlines()
        if line.startswith("| `")
        and line.split("|")[1].strip().split()[0].strip("`") in {p.value for p in Phase}
    }
    assert set(rows) == {p.value for p in Phase}
    for (phase, event), target in TRANSITIONS.items():
        if target is not phase:
            cells = rows[phase.value].split("|")
            assert f"`{event.value}`" in cells[3], (phase, event)
            assert f"`{target.value}`" in cells[4], (phase, event)
