"""The package's import graph: the Ray engine sits on top of the per-shard passes, and no module-level cycle.

Read from the source with ``ast`` (every ``import``/``from`` statement, also those inside functions and under
``TYPE_CHECKING``), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cfx"


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "cfx" or m.startswith("cfx.")}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p, top_level_only) if i in files and i != m} for m, p in files.items()}


def test_only_the_cli_and_the_engine_itself_import_the_ray_engine() -> None:
    users = {m for m, deps in _graph(top_level_only=False).items() if "cfx.engine_ray" in deps}
    assert {m for m in users if not m.startswith("cfx.cli")} == set(), "use cfx.engine.ShardEngine"


def test_no_module_level_import_cycle() -> None:
    graph = _graph(top_level_only=True)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(d) :], d]))
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_import_cycle_even_through_lazy_imports() -> None:
    """No circle at all, counting imports inside functions and under TYPE_CHECKING: a lower module never
    imports an upper one, not even lazily (issue 21 untied cfx.audit <-> cfx.joint and
    cfx.manifest <-> cfx.outputs). The circles found are listed, each as its set of modules."""
    graph = _graph(top_level_only=False)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def strong(m: str) -> None:  # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        for d in sorted(graph[m]):
            if d not in index:
                strong(d)
                low[m] = min(low[m], low[d])
            elif d in stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            part = stack[stack.index(m) :]
            del stack[stack.index(m) :]
            if len(part) > 1:
                circles.append(sorted(part))

    for m in sorted(graph):
        if m not in index:
            strong(m)
    assert circles == [], f"import circles: {circles}"
