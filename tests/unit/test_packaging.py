"""The package's metadata tells the truth: every third-party module pgvip imports is declared
in pyproject.toml, the daemon's in `dependencies` and the lab's and benchmarks' in their
extras, and the files an operator needs (LICENSE, deploy/) are shipped (issue 15)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The import name of each distribution pgvip declares (where the two differ).
MODULE_OF = {
    "prometheus-client": "prometheus_client",
    "pyyaml": "yaml",
    "psycopg-pool": "psycopg_pool",
}
# Optional features of the daemon: {module: the extra that declares it}. The daemon imports
# these only inside the function that needs them, so a node without the extra still runs.
OPTIONAL = {"psycopg": "sql"}


def _declared(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        name = req.split(";")[0].split("[")[0]
        for stop in "<>=!~ ":
            name = name.split(stop)[0]
        name = name.strip().lower()
        names.add(MODULE_OF.get(name, name.replace("-", "_")))
        if "[" in req and "pool" in req.split("[", 1)[1].split("]")[0]:
            names.add("psycopg_pool")  # psycopg[pool]
    return names


def _module_level(tree: ast.AST) -> list[ast.AST]:
    """The nodes of `tree` outside any function body: what runs when the module is imported."""
    found: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return found


def _third_party_imports(root: Path, *, module_level: bool = False) -> dict[str, set[str]]:
    """{top-level module: files importing it} for imports that are neither stdlib nor pgvip
    (with `module_level`, only the imports that run when the file is imported)."""
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in _module_level(tree) if module_level else ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("pgvip", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_import_of_the_daemon_is_a_declared_dependency() -> None:
    core = _declared(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    lab = core | _declared(extras["lab"])
    undeclared = {}
    for module, files in _third_party_imports(REPO / "pgvip").items():
        in_lab = all(f.startswith("pgvip/lab/") for f in files)
        optional = module in OPTIONAL and module in _declared(extras[OPTIONAL[module]])
        if module not in (lab if in_lab else core) and not optional:
            undeclared[module] = sorted(files)
    assert undeclared == {}, f"imported but not declared in pyproject.toml: {undeclared}"


def test_optional_dependencies_are_extras_imported_only_where_used() -> None:
    """psycopg (ro.probe_sql) is the `sql` extra, not a dependency, and outside the lab no
    module imports it at import time: `pgvip run` without the extra must still start."""
    core = _declared(PYPROJECT["project"]["dependencies"])
    assert set(OPTIONAL).isdisjoint(core)
    eager = _third_party_imports(REPO / "pgvip", module_level=True)
    for module in OPTIONAL:
        outside_lab = sorted(f for f in eager.get(module, ()) if not f.startswith("pgvip/lab/"))
        assert outside_lab == [], f"{module} imported at module level: {outside_lab}"
    assert "psycopg" in _third_party_imports(REPO / "pgvip")  # the scan sees the lazy one


def test_the_benchmarks_imports_are_declared_in_their_extras() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    known = _declared(PYPROJECT["project"]["dependencies"])
    for extra in ("lab", "bench", "test"):
        known |= _declared(extras[extra])
    missing = {m: sorted(f) for m, f in _third_party_imports(REPO / "benchmarks").items()
               if m not in known and m not in ("benchmarks", "tests")}  # fmt: skip
    assert missing == {}


def test_license_metadata_and_deploy_files_are_shipped() -> None:
    project = PYPROJECT["project"]
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert project["license"] == {"file": "LICENSE"}
    assert "License :: OSI Approved :: MIT License" in project["classifiers"]
    shipped = PYPROJECT["tool"]["setuptools"]["data-files"]["share/pgvip/deploy"]
    assert sorted(shipped) == sorted(f"deploy/{p.name}" for p in (REPO / "deploy").iterdir())
    manifest = (REPO / "MANIFEST.in").read_text().split("\n")
    assert "graft deploy" in manifest and "include LICENSE" in manifest
