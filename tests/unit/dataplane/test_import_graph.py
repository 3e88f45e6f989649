"""The dataplane modules import each other without a cycle, counting every import the source names.

Function-level and TYPE_CHECKING imports count too, and importing `a.b.c` counts as importing the
packages `a` and `a.b`, because Python runs their `__init__` first.
"""

from __future__ import annotations

from tests.unit.import_graph import cycles, import_graph


def test_the_dataplane_has_no_import_cycle() -> None:
    graph = import_graph()
    dataplane = {
        m: {t for t in ts if t.startswith("pgvip.dataplane")}
        for m, ts in graph.items()
        if m.startswith("pgvip.dataplane")
    }
    assert cycles(dataplane) == []


def test_the_balancer_interface_imports_no_implementation() -> None:
    assert import_graph()["pgvip.dataplane.balancer"] == set()


def test_the_checker_sees_function_level_and_parent_package_cycles() -> None:
    graph = {"p": {"p.impl"}, "p.impl": set(), "q": {"p.impl"}, "p.impl2": {"q"}}
    assert cycles(graph) == []
    graph["p.impl"] = {"q"}
    graph["q"] = {"p"}
    assert cycles(graph) == [["p", "p.impl", "q", "p"]]
