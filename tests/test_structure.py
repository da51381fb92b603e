"""The package's shape: imports go one way (no cycle, lazy imports included), the pipeline knows roles only."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "streamseg"


def import_graph() -> dict[str, set[str]]:
    """Module -> the streamseg modules it imports anywhere (top level or inside functions)."""
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = path.stem
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streamseg."):
                found.add(node.module.split(".")[1])
        graph[name] = found - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    graph.pop("__init__")  # the package's API re-exports; nothing imports it back
    graph.pop("__main__")
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_pipeline_depends_on_roles_not_on_the_model_render_or_outputs():
    assert import_graph()["pipeline"] <= {"channel", "config", "errors", "frames", "live_batch", "resources", "roles", "stats"}


def test_the_model_families_do_not_know_the_loader():
    graph = import_graph()
    for family in ("semantic", "universal", "preprocess", "tensor_ops"):
        assert "model" not in graph[family] and "app" not in graph[family], family


def test_no_module_is_a_hub():
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")}
    assert max(sizes.values()) <= 420, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
