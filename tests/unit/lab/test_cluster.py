"""Tests for pgvip.lab.cluster that need no root: readiness rules, loading, names, command lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import LabLayout
from pgvip.lab.readiness import assess_cluster
from pgvip.lab.state import LabState, StateStore

NODES = ["p1", "p2", "p3"]


def member(name: str, role: str, state: str) -> dict[str, Any]:
    return {"name": name, "role": role, "state": state}


def test_ready_needs_one_leader_and_every_replica_streaming() -> None:
    members = [
        member("p1", "replica", "streaming"),
        member("p2", "leader", "running"),
        member("p3", "replica", "streaming"),
    ]
    r = assess_cluster(members, NODES)
    assert r.ready and r.leader == "p2" and r.behind == ()
    assert r.summary == "leader p2; p1 streaming; p3 streaming"


def test_a_replica_not_streaming_holds_it_back() -> None:
    members = [
        member("p1", "leader", "running"),
        member("p2", "replica", "creating replica"),
        member("p3", "replica", "streaming"),
    ]
    r = assess_cluster(members, NODES)
    assert not r.ready and r.leader == "p1" and r.behind == ("p2",)
    assert "p2 replica creating replica" in r.summary


def test_a_missing_member_holds_it_back() -> None:
    r = assess_cluster(
        [member("p1", "leader", "running"), member("p2", "replica", "streaming")], NODES
    )
    assert not r.ready and r.behind == ("p3",) and "p3 not registered" in r.summary


def test_no_leader_blames_every_node() -> None:
    r = assess_cluster([member("p1", "replica", "stopped")], NODES)
    assert not r.ready and r.leader is None and r.behind == tuple(NODES)
    assert r.summary.startswith("no leader yet")


def test_a_leader_that_is_not_running_is_no_leader() -> None:
    members = [member("p1", "leader", "starting"), member("p2", "replica", "streaming")]
    assert assess_cluster(members, ["p1", "p2"]).leader is None


def test_two_leaders_are_not_ready() -> None:
    members = [member("p1", "leader", "running"), member("p2", "leader", "running")]
    r = assess_cluster(members, ["p1", "p2"])
    assert not r.ready and r.leader is None and "2 leaders" in r.summary


def test_sync_standby_counts_as_a_replica() -> None:
    members = [member("p1", "leader", "running"), member("p2", "sync_standby", "streaming")]
    assert assess_cluster(members, ["p1", "p2"]).ready


def make_lab(tmp_path: Path, **kw: Any) -> Lab:
    layout = LabLayout.create(prefix="t1", subnet="10.20.50.0/24", root=tmp_path)
    return Lab(layout, **kw)


def test_paths(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    logs = tmp_path / "t1" / "logs"
    assert lab.log_path("p1", "patroni") == logs / "p1-patroni.log"
    assert lab.log_path("p2", "pgvip") == logs / "p2-pgvip.log"
    # PostgreSQL's logging collector writes the name render.patroni_config asks for.
    assert lab.log_path("p3", "postgres") == logs / "p3-postgresql.log"
    assert lab.log_path("etcd", "etcd") == logs / "etcd.log"
    assert lab.pgvip_config_path("p1") == tmp_path / "t1" / "p1" / "pgvip.toml"


def test_load_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no lab with prefix 'zz'.*pgvip lab up --prefix zz"):
        Lab.load("zz", tmp_path)


def test_load_rebuilds_the_lab_from_its_state(tmp_path: Path) -> None:
    state = LabState(
        prefix="t2",
        subnet="10.20.51.0/24",
        nodes=4,
        root=str(tmp_path),
        pgvip=False,
        pg_bin="/opt/pg/bin",
        pgvip_overrides={"ro": True},
    )
    StateStore(tmp_path / "t2" / "state.json").save(state)
    lab = Lab.load("t2", tmp_path)
    assert lab.layout.node_names() == ["p1", "p2", "p3", "p4"]
    assert str(lab.layout.subnet) == "10.20.51.0/24"
    assert (lab.pgvip, str(lab.pg_bin), lab.pgvip_overrides) == (False, "/opt/pg/bin", {"ro": True})


def test_load_of_a_damaged_state_is_a_lab_error(tmp_path: Path) -> None:
    (tmp_path / "t3").mkdir()
    (tmp_path / "t3" / "state.json").write_text("{")
    with pytest.raises(LabError, match="not valid JSON"):
        Lab.load("t3", tmp_path)


def test_patroni_runs_as_postgres_in_a_clean_environment(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    argv, cwd = lab._argv("p2", "patroni")
    assert argv[:4] == ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    env_at = argv.index("env")
    assert argv[env_at + 1] == "-i"
    assert f"HOME={lab.layout.node_dir('p2')}" in argv
    assert argv[-2:] == [
        str(lab.venv_bin / "patroni"),
        str(lab.layout.node_dir("p2") / "patroni.yml"),
    ]
    assert cwd == lab.layout.node_dir("p2")


def test_pgvip_runs_unprivileged_with_two_capabilities(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    argv, _ = lab._argv("p1", "pgvip")
    caps = "-all,+net_admin,+net_raw"
    for flag in ("--inh-caps", "--ambient-caps", "--bounding-set"):
        assert f"{flag}={caps}" in argv
    assert "--reuid=pgvip" in argv
    assert argv[-4:] == [
        str(lab.venv_bin / "pgvip"),
        "run",
        "--config",
        str(lab.pgvip_config_path("p1")),
    ]


def test_bad_names_are_lab_errors(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, pgvip=False)
    with pytest.raises(LabError, match="unknown node 'p7'"):
        lab.pid("p7", "patroni")
    with pytest.raises(LabError, match="unknown process 'redis'"):
        lab.pid("p1", "redis")
    with pytest.raises(LabError, match="without pgvip"):
        lab.pid("p1", "pgvip")
    with pytest.raises(LabError, match="etcd runs on host 'etcd'"):
        lab.pid("p1", "etcd")
    with pytest.raises(LabError, match="cannot start 'postgres'"):
        lab.start("p1", "postgres")
    with pytest.raises(LabError, match="unknown host 'mars'"):
        lab.run("mars", ["true"])


def test_nothing_recorded_means_not_running(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    assert lab.pid("p1", "patroni") is None
    lab.kill("p1", "patroni")  # nothing to kill is not an error


def live_primary(*streaming_to: str) -> dict[str, Any]:
    return {
        "role": "primary",
        "state": "running",
        "replication": [{"application_name": n, "state": "streaming"} for n in streaming_to],
    }


def live_replica(state: str = "running", replication: str = "streaming") -> dict[str, Any]:
    return {"role": "replica", "state": state, "replication_state": replication}


READY_DCS = [
    member("p1", "leader", "running"),
    member("p2", "replica", "streaming"),
    member("p3", "replica", "streaming"),
]


def test_live_views_that_agree_are_ready() -> None:
    live = {"p1": live_primary("p2", "p3"), "p2": live_replica(), "p3": live_replica()}
    assert assess_cluster(READY_DCS, NODES, live).ready


def test_a_stale_dcs_entry_is_caught_by_the_live_view() -> None:
    # The DCS keeps a killed replica's last "streaming" for up to ttl; its REST API is gone.
    live: dict[str, Any] = {
        "p1": live_primary("p3"),
        "p2": "connection refused",
        "p3": live_replica(),
    }
    r = assess_cluster(READY_DCS, NODES, live)
    assert not r.ready
    assert r.behind == ("p1", "p2")
    assert "p2 (Patroni REST: connection refused)" in r.summary
    assert "p1 (primary, not yet streaming to p2)" in r.summary


def test_a_replica_that_restarts_is_not_ready() -> None:
    live = {
        "p1": live_primary("p2", "p3"),
        "p2": live_replica("starting", "?"),
        "p3": live_replica(),
    }
    r = assess_cluster(READY_DCS, NODES, live)
    assert not r.ready and r.behind == ("p2",)
    assert "its Patroni says replica starting" in r.summary


def test_a_demoted_leader_is_not_ready() -> None:
    live = {"p1": live_replica(), "p2": live_replica(), "p3": live_replica()}
    r = assess_cluster(READY_DCS, NODES, live)
    assert not r.ready and "leads in DCS, but its Patroni says replica" in r.summary


def test_a_node_missing_from_the_live_views_is_not_ready() -> None:
    live = {"p1": live_primary("p2", "p3"), "p2": live_replica()}
    r = assess_cluster(READY_DCS, NODES, live)
    assert not r.ready and "p3 (Patroni REST: no answer)" in r.summary


def test_owner_is_the_live_process_that_built_the_lab(tmp_path: Path) -> None:
    import os

    from pgvip.lab import processes

    lab = make_lab(tmp_path)
    assert lab.owner() is None  # no state file
    me = processes.identify(os.getpid())
    assert me is not None
    state = LabState(
        prefix="t1",
        subnet="10.20.50.0/24",
        nodes=3,
        root=str(tmp_path),
        pgvip=True,
        pg_bin="/usr/lib/postgresql/15/bin",
        owner_pid=me.pid,
        owner_start_time=me.start_time,
    )
    lab.store.save(state)
    assert lab.owner() == os.getpid()
    # A CLI `up` that has exited (or a PID now used by another program) owns nothing.
    state.owner_start_time = me.start_time + 1
    lab.store.save(state)
    assert lab.owner() is None


def test_relative_pg_bin_is_made_absolute(tmp_path: Path) -> None:
    lab = make_lab(tmp_path, pg_bin="rel/bin")
    assert lab.pg_bin.is_absolute() and str(lab.pg_bin).endswith("rel/bin")
