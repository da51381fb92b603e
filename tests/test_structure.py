"""The package's shape: a folder per part of the pipeline, imports only going down a floor (lazy imports
included), no cycle between modules, and nothing in the package that imports the tests' or benchmarks' code."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "streamseg"

# Each part of the package and its floor: a part may import its own modules and parts on lower floors only.
CORE = ("lazy", "errors", "closing", "frames", "config", "roles")
FLOORS = {
    **dict.fromkeys(CORE, 0),
    "pipeline": 1, "sources": 1, "models": 1, "testing": 1,
    "render": 2,
    "outputs": 3,
    "serve": 4,
    "app": 5,
    "cluster": 6,
    "cli": 7,
}
FACADES = ("streamseg", "streamseg.__main__")  # the package's API re-exports lazily; nothing imports them back


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The streamseg modules (or packages) ``path`` imports anywhere: at the top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or target == "streamseg" and {a.name for a in node.names} != {"__version__"}:
                found.update(f"{target}.{a.name}" for a in node.names)  # from . import module
            elif target != "streamseg":  # the version is the only name taken from the package itself
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("streamseg", "benchmarks")} - {name}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def part(module: str) -> str:
    """``streamseg.outputs.video`` -> ``outputs``; ``streamseg.app`` -> ``app``."""
    return module.split(".")[1] if module.count(".") else module


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


def test_every_part_of_the_package_has_a_floor():
    parts = {part(m) for m in import_graph()} - set(FACADES) - {"__main__"}
    assert parts <= set(FLOORS), f"a new part needs a floor in FLOORS: {sorted(parts - set(FLOORS))}"
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == {k for k, v in FLOORS.items() if v > 0 and k != "app"}


def test_imports_only_go_down_a_floor():
    upward = []
    for module, targets in import_graph().items():
        if module in FACADES:
            continue
        for target in targets:
            assert not target.startswith("benchmarks") or part(module) == "cli", f"{module} imports {target}"
            if target.startswith("benchmarks") or target in FACADES:
                continue
            mine, theirs = part(module), part(target)
            if mine != theirs and not (FLOORS[mine] == 0 and FLOORS[theirs] == 0) and FLOORS[theirs] >= FLOORS[mine]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that go up or sideways a floor:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules():
    graph = {m: {t for t in ts if t.startswith("streamseg")} for m, ts in import_graph().items() if m not in FACADES}
    # a package's __init__ re-exports its own modules lazily: an edge to a package means its __init__ module
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_benchmarks_do_not_import_the_command_line():
    """``streamseg bench`` (the CLI) calls into benchmarks/; the other way round would be a cycle."""
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        assert not any(t.startswith("streamseg.cli") for t in imports_of(path)), path.name


def test_the_model_families_do_not_know_the_loader():
    graph = import_graph()
    heads = [m for m in graph if m.startswith("streamseg.models.heads.")]
    assert heads
    for head in heads:
        assert "streamseg.models.segmenter" not in graph[head], head


def test_the_find_helpers_see_what_they_should(tmp_path):
    """The checks above would pass on an empty graph: the graph holds what the code imports."""
    graph = import_graph()
    assert "streamseg.pipeline.channel" in graph["streamseg.outputs.publish"]
    assert "streamseg.app" in graph["streamseg.cluster.batch"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
