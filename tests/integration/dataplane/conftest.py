"""Fixture `netlab` for the dataplane tests: hosts a, b, c on a bridge (see ../netlab.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.netlab import *  # noqa: F403  (the tests import helpers from here)
from tests.integration.netlab import NetLab, switched_lab


@pytest.fixture
def netlab() -> Iterator[NetLab]:
    with switched_lab("t-dp") as lab:
        yield lab
