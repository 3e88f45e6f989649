"""The lab fixtures: one real 3-node Patroni lab per test session, built by the same `Lab` class
as `pgvip lab up`, and a per-test reset so tests that break it stay independent.

Environment: PGVIP_TEST_PREFIX (default pgvt), PGVIP_TEST_SUBNET (default 10.20.31.0/24),
pgvip runs on the nodes unless PGVIP_TEST_PGVIP=0 (or PGVIP_TEST_NO_PGVIP=1). Two more labs
have their own pairs: PGVIP_TEST_DOWN_PREFIX/_SUBNET (test_lab.py's second lab, pgvd on
10.20.32.0/24) and PGVIP_TEST_BENCH_PREFIX/_SUBNET (the benchmark smoke, t-bench on
10.20.37.0/24). Two test sessions at once need all three pairs set apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pgvip.lab.cluster import Lab
from pgvip.lab.errors import LabError
from pgvip.lab.layout import LabLayout

LAB_UP_TIMEOUT = 120.0
RESET_TIMEOUT = 90.0


def lab_settings() -> tuple[str, str, bool]:
    prefix = os.environ.get("PGVIP_TEST_PREFIX", "pgvt")
    subnet = os.environ.get("PGVIP_TEST_SUBNET", "10.20.31.0/24")
    pgvip = os.environ.get("PGVIP_TEST_PGVIP", "1") == "1"
    if os.environ.get("PGVIP_TEST_NO_PGVIP", "0") == "1":
        pgvip = False
    return prefix, subnet, pgvip


def remove_stale_lab(layout: LabLayout) -> None:
    """A crashed earlier run may have left a lab with this prefix: remove it first.

    A lab whose builder still runs (another pytest session) is not stale: fail instead of
    pulling it from under that session.
    """
    if layout.state_file.exists():
        try:
            stale = Lab.load(layout.prefix, layout.root)
        except LabError:
            stale = Lab(layout)  # damaged state file: down() falls back to the names
        owner = stale.owner()
        if owner is not None and owner != os.getpid():
            pytest.fail(
                f"lab {layout.prefix!r} belongs to the running process {owner}; "
                "give this session its own PGVIP_TEST_PREFIX and PGVIP_TEST_SUBNET "
                "(and the DOWN and BENCH pairs, see tests/integration/conftest.py)"
            )
        stale.down()
        return
    Lab(layout).down()


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    prefix, subnet, pgvip = lab_settings()
    layout = LabLayout.create(prefix=prefix, subnet=subnet, nodes=3)
    remove_stale_lab(layout)
    the_lab = Lab(layout, pgvip=pgvip)
    try:
        the_lab.up(timeout=LAB_UP_TIMEOUT, progress=lambda msg: print(f"lab: {msg}"))
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def lab_ready(lab: Lab) -> Lab:
    """The session lab, healed, with every daemon running and the cluster ready."""
    lab.reset(timeout=RESET_TIMEOUT)
    return lab
