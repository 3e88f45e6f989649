"""docs/openapi.yaml checked against the live StatusServer with schemathesis: generated requests
(valid and invalid) get documented status codes, content types, headers and bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.integration.status.conftest import Live, LoopThread, start_live

OPENAPI = Path(__file__).resolve().parents[3] / "docs" / "openapi.yaml"
schema = schemathesis.openapi.from_path(OPENAPI)


@pytest.fixture(scope="module")
def api() -> Iterator[Live]:
    loop = LoopThread()
    live = start_live(loop)
    live.metrics.transition("rw", "BACKUP", "MASTER", "master_down")
    live.metrics.poll("rw", 0.004, "ok")
    try:
        yield live
    finally:
        loop.run(live.server.stop())
        loop.close()


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_live_server_conforms_to_openapi(case: schemathesis.Case, api: Live) -> None:
    case.call_and_validate(base_url=api.url)


def test_every_documented_path_is_served(api: Live) -> None:
    """The property test above covers what the document lists; this covers the reverse."""
    import urllib.request

    documented = set(schema.raw_schema["paths"])
    assert documented == {"/status", "/health", "/metrics"}
    for path in documented:
        with urllib.request.urlopen(api.url + path, timeout=5) as response:
            assert response.status == 200
