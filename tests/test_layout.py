"""The package's import graph: no cycles between modules, and layers depend one way
(commands -> pipeline -> actors -> decode -> models, tasks, errors, judge). Function-level
(lazy) imports count too: a cycle hidden inside a function is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autojudge"
LAYERS = ["commands", "pipeline", "actors", "decode"]
"""Top to bottom; a module may import only from its own layer or the ones below it."""
BELOW_LAYERS = {"models", "model_specs", "setup", "draft_vocab", "tasks", "errors", "files", "judge", "judge_format", "checks", "toy",
                "ray_utils"}
"""Modules under every layer: they import none of the layers (ray_utils: Ray set-up only)."""
TOOLS = {"real"}
"""Beside the layers: `real` (set-up and measurement of the real pair) may compute with `decode`."""
FREE = {"cli", "testing", None}
"""`cli` dispatches to the commands; `testing` (helpers for tests and benches) may use any layer."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """autojudge modules imported anywhere in the file (an `import a.b` of a package counts as a.b)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("autojudge") and name != module_name(path):
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    edges = {module_name(p): imports_of(p, modules) for p in paths}
    # a package's __init__ importing its own submodules is not a dependency between layers
    return {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in edges.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_layers_depend_one_way():
    wrong = []
    for module, deps in graph().items():
        mine = layer(module)
        for dep in deps:
            theirs = layer(dep)
            if theirs not in LAYERS or mine in FREE:
                continue
            upward = mine in LAYERS and LAYERS.index(theirs) < LAYERS.index(mine)
            tool_upward = mine in TOOLS and theirs != "decode"
            if mine in BELOW_LAYERS or upward or tool_upward:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_every_module_has_a_place():
    places = set(LAYERS) | BELOW_LAYERS | TOOLS | FREE
    assert sorted({str(layer(module)) for module in graph() if layer(module) not in places}) == []


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("autojudge.decode.core") == "decode" and LAYERS.index("decode") > LAYERS.index("pipeline")


def test_no_test_module_imports_another():
    """Shared test helpers live in conftest.py (fixtures) and autojudge/testing.py, never in a test module."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.glob("test_*.py")}
    wrong = []
    for path in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            imported = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{path.name} imports {name}" for name in imported if name.split(".")[0] in names]
    assert wrong == []
