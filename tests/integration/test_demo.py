"""The probe and the demo against the session's real lab (tests/integration/conftest.py).

Run beside other engineers' labs with PGVIP_TEST_PREFIX / PGVIP_TEST_SUBNET set to your own.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgvip.lab.cluster import Lab
from pgvip.lab.demo import run_demo

pytestmark = pytest.mark.integration

PYTHON = str(Path(sys.executable).parent / "python")


def test_probe_writes_reads_and_follows_the_leader(lab_ready: Lab) -> None:
    layout = lab_ready.layout
    leader = lab_ready.leader()
    assert leader is not None
    replica = next(
        m["name"] for m in lab_ready.members() if m["name"] != leader and m["state"] == "streaming"
    )
    argv = [
        "ip", "netns", "exec", layout.client_ns, PYTHON, "-m", "pgvip.lab.probe",
        "--subnet", str(layout.subnet), "--nodes", str(layout.nodes), "--leader",
        # Point the "VIPs" at the nodes themselves, so this runs without pgvip too.
        "--rw", str(layout.node_ip(leader)), "--ro", str(layout.node_ip(replica)),
        "--count", "20",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["seq"] for x in lines] == list(range(20))
    steady = lines[10:]  # the leader watch needs a poll or two
    for line in steady:
        assert line["rw_ok"] is True, line
        assert line["rw_node"] == leader
        assert line["ro_ok"] is True and line["ro_replica"] is True, line
        assert line["ro_node"] == replica
        assert line["leader"] == leader and line["leader_ok"] is True, line
    gaps = [b["t"] - a["t"] for a, b in zip(lines, lines[1:], strict=False)]
    # 0.1 s apart on average, on a fixed schedule: a late sample is followed by an early one.
    assert all(0 < g < 1.0 for g in gaps), gaps
    assert 0.07 < sum(gaps) / len(gaps) < 0.2, gaps
    # The rows really went in, on the leader.
    count = lab_ready.run(
        leader,
        [
            str(lab_ready.pg_bin / "psql"),
            "-X",
            "-At",
            "-h",
            str(layout.socket_dir(leader)),
            "-U",
            "postgres",
            "-c",
            "select count(*) from pgvip_probe where src = 'rw'",
        ],  # fmt: skip
        check=True,
        timeout=20,
    )
    assert int(count.stdout.strip()) >= 10


def test_demo_switchover_end_to_end(lab_ready: Lab) -> None:
    before = lab_ready.leader()
    out = io.StringIO()
    assert run_demo(lab_ready, out=out, scenarios=("switchover",)) == 0, out.getvalue()
    text = out.getvalue()
    after = lab_ready.leader()
    assert after is not None and after != before

    rows = [line for line in text.splitlines() if re.match(r"\s+\d+\.\ds  RW ", line)]
    times = [float(line.split("s", 1)[0]) for line in rows]
    # One row per 100 ms sample, over a scenario that takes several seconds.
    assert len(rows) > 40
    assert sum(1 for a, b in zip(times, times[1:], strict=False) if b - a > 0.35) == 0
    assert f">>> switchover {before} -> {after}" in text

    table = text[text.index("scenario ") :]
    row = next(line for line in table.splitlines() if line.startswith("switchover"))
    assert f"{before} -> {after}" in row
    assert row.rstrip().endswith("recovered")
    gaps = [float(x) for x in re.findall(r"(?<![+\d.-])(\d+\.\d+) s", row)]
    assert gaps, row
    # Patroni's own write gap on a switchover is ~2.4 s here (shared/notes/platform.md).
    assert all(0.1 < g < 20 for g in gaps), row
    assert "app writer gap" in text
    if lab_ready.pgvip:
        assert " 1 " in row  # never two RW holders
        # The application-model writer pays about what its twin pays: a SYN lost while the
        # VIP moves would cost it its whole 1 s connect deadline.
        extra = re.search(r"([+-]\d+\.\d+) s", row)
        assert extra is not None and float(extra.group(1)) < 0.9, row
    else:
        assert "n/a" in row  # no pgvip: writes through the RW VIP never worked
