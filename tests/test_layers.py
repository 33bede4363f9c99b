"""The package's layers (docs/design.md): imports point down, never up, and never in a circle.

    console -> cli -> experiments -> engine -> {tasks, baselines} -> {models, learners} -> util

``learners/`` (the library) imports torch and itself only. Read from the source with
``ast``, function-local imports included, so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "leap"

#: Each top-level part of the package and its height; an import may only point to a lower one
#: (or stay inside its own part).
LAYERS = {
    "util": 0,
    "learners": 1,
    "models": 1,
    "baselines": 2,
    "tasks": 2,
    "engine": 3,
    "experiments": 4,
    "cli": 5,
    "console": 6,  # the entry point: --version without the rest, else cli
    "__main__": 7,
    "__init__": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The leap modules ``path`` imports (``from leap.x import y`` counts leap.x.y when it
    is a module, else leap.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("leap")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("leap"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def part(module: str) -> str:
    """The top-level part of the package a module belongs to (``leap.engine.loop``: engine)."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_part_of_the_package_has_a_layer():
    parts = {part(name) for name in modules()}
    assert parts <= set(LAYERS), f"parts without a layer in this test: {parts - set(LAYERS)}"


def arrows_against_the_layers(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, targets in graph.items():
        for target in targets:
            here, there = part(name), part(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{name} -> {target}")
    return sorted(wrong)


def test_imports_point_down_the_layers():
    wrong = arrows_against_the_layers(import_graph())
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_library_imports_torch_and_itself_only():
    for path in sorted((PACKAGE / "learners").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ("torch", "__future__", "typing", "collections", "dataclasses", "math", "warnings") or \
                    name.startswith("leap.learners"), f"{path.name} imports {name}"


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


def test_there_are_no_import_circles():
    circles = import_circles(import_graph())
    assert not circles, f"import circles: {circles}"


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_circles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("bad", ["leap.cli", "leap.experiments.config", "leap.tasks.omniglot"])
def test_the_layer_check_catches_an_arrow_that_points_up_or_sideways(tmp_path, bad):
    # The check above must be able to fail: a probe module in learners/ importing ``bad``.
    path = tmp_path / "probe.py"
    path.write_text(f"def lazy():\n    from {bad} import something\n")
    graph = {"leap.learners.probe": imports_of(path, set(modules()))}
    assert arrows_against_the_layers(graph) == [f"leap.learners.probe -> {bad}"]


def test_the_engine_knows_no_task_family():
    # Tasks come in through leap.tasks.base (Task, Benchmark, SplitAugment) only; what a
    # family needs (Omniglot's augmentation) travels with its tasks.
    graph = import_graph()
    engine_imports = {t for name, targets in graph.items() if part(name) == "engine" for t in targets}
    assert {t for t in engine_imports if part(t) == "tasks"} == {"leap.tasks.base"}
