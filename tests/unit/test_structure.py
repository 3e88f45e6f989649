"""The shape of the package, as issue 11 left it: no import cycles (TYPE_CHECKING imports
included), no runtime module over 400 lines, no `Any` in the composition root, and the
daemon never imports the lab."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.unit.import_graph import cycles, import_graph

PACKAGE = Path(__file__).resolve().parents[2] / "pgvip"
MAX_RUNTIME_LINES = 400
COMPOSITION_ROOT = ("daemon/engine.py", "daemon/service.py", "daemon/snapshot.py")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_runtime_module_is_over_400_lines() -> None:
    sizes = {
        name: len(path.read_text().splitlines())
        for name, path in _modules().items()
        if not name.startswith("pgvip.lab")
    }
    assert {n: s for n, s in sizes.items() if s > MAX_RUNTIME_LINES} == {}


def test_the_composition_root_has_no_any() -> None:
    for rel in COMPOSITION_ROOT:
        tree = ast.parse((PACKAGE / rel).read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "Any" not in names, rel


def test_the_daemon_does_not_import_the_lab() -> None:
    code = (
        "import sys, pgvip.cli, pgvip.daemon.service, pgvip.daemon.engine\n"
        "print(sorted(m for m in sys.modules if m.startswith('pgvip.lab')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
