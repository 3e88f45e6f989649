"""Suite-wide rules: integration tests need root, and CI never lets them skip."""

from __future__ import annotations

import os

import pytest

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
_skipped_integration: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="integration test: needs root (network namespaces, raw sockets)")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped integration test is a failure, not a footnote."""
    if IN_CI and _skipped_integration:
        print(f"\nCI: {len(_skipped_integration)} integration test(s) skipped, which fails CI:")
        for nodeid in _skipped_integration:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
