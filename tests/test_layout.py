"""The package's import graph: no cycles between modules, and layers depend one way
(commands -> pipeline -> actors -> decode -> models, tasks, errors, judge). Inside decode, its
subsystems depend one way too: `mining` and `hogwild` build on `engine`, which imports neither,
and they never import each other. Function-level (lazy) imports count too: a cycle hidden inside
a function is still a cycle.

The checks are functions of a package folder (`graph(root)`), so the last tests plant violations
in a small fake package and assert that the same functions report them."""

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
FREE = {"cli", None}
"""`cli` dispatches to the commands (None: the package's own `__init__`)."""
DECODE_BASE = "engine"
"""The subsystem of `decode` the others build on (the engine's cache, lean forward, acceptance)."""
DECODE_SUBSYSTEMS = {"engine", "mining", "hogwild"}
"""`decode`'s subpackages: each may import `engine`; `engine` imports none of the others, nor they each other."""


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """autojudge modules imported anywhere in the file (an `import a.b` of a package counts as a.b)."""
    found: set[str] = set()
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
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
            if name.startswith("autojudge") and name != module_name(path, root):
                found.add(name)
    return found


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, for the package folder `root`."""
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    edges = {module_name(p, root): imports_of(p, modules, root) for p in paths}
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


def decode_subsystem(module: str) -> str | None:
    """`engine`, `mining` or `hogwild` for a module inside one of decode's subpackages, else None."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "decode" else None


def wrong_imports(edges: dict[str, set[str]]) -> list[str]:
    """Every import against the layering: upward between layers, from below the layers into them, from a
    tool into anything but decode, and inside decode between subsystems other than onto `engine`."""
    wrong = []
    for module, deps in edges.items():
        mine = layer(module)
        for dep in deps:
            theirs = layer(dep)
            if mine == theirs == "decode":
                ours, other = decode_subsystem(module), decode_subsystem(dep)
                if ours and other and ours != other and other != DECODE_BASE:
                    wrong.append(f"{module} imports {dep}")
                continue
            if theirs not in LAYERS or mine in FREE:
                continue
            upward = mine in LAYERS and LAYERS.index(theirs) < LAYERS.index(mine)
            tool_upward = mine in TOOLS and theirs != "decode"
            if mine in BELOW_LAYERS or upward or tool_upward:
                wrong.append(f"{module} imports {dep}")
    return sorted(wrong)


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_layers_depend_one_way():
    assert wrong_imports(graph()) == []


def test_every_module_has_a_place():
    places = set(LAYERS) | BELOW_LAYERS | TOOLS | FREE
    modules = graph()
    assert sorted({str(layer(module)) for module in modules if layer(module) not in places}) == []
    in_decode = [module for module in modules if layer(module) == "decode" and module != "autojudge.decode"]
    assert sorted(module for module in in_decode if decode_subsystem(module) not in DECODE_SUBSYSTEMS) == []
    assert {decode_subsystem(module) for module in in_decode} == DECODE_SUBSYSTEMS


PLANTED = {
    "__init__.py": "",
    "errors.py": "from autojudge import models\n",  # a cycle below the layers: errors <-> models
    "models.py": "import autojudge.errors\n",
    "pipeline/__init__.py": "",
    "pipeline/run.py": "from autojudge.decode.engine import core\n",  # downward: allowed
    "decode/__init__.py": "",
    "decode/engine/__init__.py": "from autojudge.decode.engine.core import step\n",  # its own submodule: allowed
    "decode/engine/core.py": "def step():\n    import autojudge.pipeline.run\n",  # upward, lazy (and a cycle with run)
    "decode/engine/cache.py": "from autojudge.decode.mining import search\n",  # the engine onto mining
    "decode/engine/lean.py": "",
    "decode/mining/__init__.py": "",
    "decode/mining/search.py": "from ..hogwild import blocks\n",  # sideways between subsystems, relative
    "decode/hogwild/__init__.py": "",
    "decode/hogwild/blocks.py": "from autojudge.decode.engine.lean import forward\n",  # onto the engine: allowed
}
"""A fake package (path under `autojudge/` -> source) with two cycles and three wrong imports planted."""


def test_the_checker_reports_planted_cycles_and_wrong_imports(tmp_path):
    """The same functions the tests above run on the package, on a fake package with violations planted."""
    root = tmp_path / "autojudge"
    for relative, text in PLANTED.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    edges = graph(root)
    assert cycles(edges) == [["autojudge.decode.engine.core", "autojudge.pipeline.run"], ["autojudge.errors", "autojudge.models"]]
    assert wrong_imports(edges) == [  # `from P import m` imports package P (its __init__) and module P.m
        "autojudge.decode.engine.cache imports autojudge.decode.mining",
        "autojudge.decode.engine.cache imports autojudge.decode.mining.search",
        "autojudge.decode.engine.core imports autojudge.pipeline.run",
        "autojudge.decode.mining.search imports autojudge.decode.hogwild",
        "autojudge.decode.mining.search imports autojudge.decode.hogwild.blocks",
    ]
    # the same tree with the violations taken out: the allowed imports report nothing
    (root / "decode/engine/core.py").write_text("")
    (root / "decode/engine/cache.py").write_text("")
    (root / "decode/mining/search.py").write_text("from autojudge.decode.engine import cache\n")
    (root / "errors.py").write_text("")
    assert cycles(graph(root)) == []
    assert wrong_imports(graph(root)) == []


def imported_names(path: Path) -> list[str]:
    """Every module name an import statement of the file names (relative imports as written, without dots)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


def test_no_test_module_imports_another():
    """Shared test helpers live in conftest.py (fixtures) and tests/helpers.py, never in a test module."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.glob("test_*.py")}
    wrong = []
    for path in sorted(tests.glob("*.py")):
        wrong += [f"{path.name} imports {name}" for name in imported_names(path) if set(name.split(".")) & names]
    assert wrong == []


def test_the_package_never_imports_the_tests():
    """The test helpers are not shipped in the wheel, so no module of the package may need them."""
    wrong = [f"{module_name(path)} imports {name}" for path in sorted(PACKAGE.rglob("*.py"))
             for name in imported_names(path) if name.split(".")[0] in ("tests", "conftest", "helpers")]
    assert wrong == []
