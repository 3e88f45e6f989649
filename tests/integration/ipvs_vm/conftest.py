"""Fixtures for the IPVS VM tests: `vm`, the guest tooling scripts/ipvs-vm/vm.py (loaded by
path, since scripts/ is not a package), and a summary of the measured VM timings.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[3]
VM_SCRIPT = REPO / "scripts" / "ipvs-vm" / "vm.py"
# Lines for the end-of-run summary ("boot 2.8 s, ..."), filled by the tests that boot.
TIMINGS: list[str] = []


def load_vm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pgvip_ipvs_vm", VM_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {VM_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the module executes.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def vm() -> ModuleType:
    return load_vm()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "IPVS VM timings (qemu TCG, Debian 6.1 guest)")
        for line in TIMINGS:
            terminalreporter.write_line(line)
