"""Tests for pgvip.lab.state: the JSON state file, its atomic writes and its validation."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from pgvip.lab.state import LabState, ProcessEntry, StateError, StateStore, process_key


def make_state() -> LabState:
    return LabState(
        prefix="t1",
        subnet="10.20.50.0/24",
        nodes=3,
        root="/tmp/x",
        pgvip=True,
        pg_bin="/usr/lib/postgresql/15/bin",
        pgvip_overrides={"ro": True, "advert_int": 100},
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "t1" / "state.json")
    state = make_state()
    state.namespaces = ["t1-sw", "t1-p1"]
    state.route = "10.20.50.0/24"
    entry = ProcessEntry("p1", "patroni", 123, 456, ["patroni", "x.yml"], 1.5)
    state.processes[entry.key] = entry
    store.save(state)
    loaded = store.load()
    assert loaded == state
    assert loaded.processes["p1/patroni"].start_time == 456
    assert process_key("etcd", "etcd") == "etcd/etcd"


def test_save_replaces_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(make_state())
    first_inode = store.path.stat().st_ino
    state = store.load()
    state.phase = "ready"
    store.save(state)
    assert store.load().phase == "ready"
    # os.replace puts a new file in place: a reader never sees a half-written one.
    assert store.path.stat().st_ino != first_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_update_records_changes_incrementally(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(make_state())
    with store.update() as state:
        state.namespaces.append("t1-sw")
    with store.update() as state:
        state.route = "10.20.50.0/24"
    loaded = store.load()
    assert loaded.namespaces == ["t1-sw"] and loaded.route == "10.20.50.0/24"


def test_update_does_not_save_when_the_body_raises(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(make_state())
    with pytest.raises(RuntimeError), store.update() as state:
        state.phase = "ready"
        raise RuntimeError("boom")
    assert store.load().phase == "creating"


def _add_process(path: str, index: int) -> None:
    store = StateStore(Path(path))
    for round_ in range(10):
        with store.update() as state:
            key = f"h{index}-{round_}/x"
            state.processes[key] = ProcessEntry(f"h{index}", "x", index, round_, [], 0.0)


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(make_state())
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_add_process, args=(str(store.path), i)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    assert len(store.load().processes) == 40


def test_missing_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "nope" / "state.json")
    assert not store.exists()
    with pytest.raises(StateError, match="no lab state at .*nope/state.json"):
        store.load()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"version": 99}', "has version 99"),
        ('{"version": 1, "prefix": "x"}', "unexpected or missing fields"),
    ],
)
def test_damaged_file_is_a_state_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(text)
    with pytest.raises(StateError, match=message):
        StateStore(path).load()


def test_unknown_phase_is_refused(tmp_path: Path) -> None:
    doc = json.loads(make_state().to_json())
    doc["phase"] = "dancing"
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(StateError, match="unknown phase 'dancing'"):
        StateStore(path).load()


def test_remove_is_idempotent(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save(make_state())
    with store.update():
        pass
    store.remove()
    store.remove()
    assert list(tmp_path.iterdir()) == []
