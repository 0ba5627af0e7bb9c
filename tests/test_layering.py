"""The engine's import rules (docs/design.md, "Layering"), read from the source with ast:
engine/ imports nothing of the package above it (Jupyter layer, store, CLI, the package
root), and no two of its modules import each other, directly or round a longer loop, at
module level or inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

import jupyter_ckpt

PACKAGE = Path(jupyter_ckpt.__file__).parent
ENGINE = "jupyter_ckpt.engine"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package by dotted name: (its file, whether it is a package)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _imports(name: str, path: Path, is_package: bool, modules: dict) -> set[str]:
    """The package's modules that `name` imports anywhere in its source."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
    return {t for t in targets if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def test_engine_imports_nothing_above_it():
    graph = _graph()
    upward = sorted(f"{name} imports {target}" for name, targets in graph.items()
                    if name.startswith(ENGINE) for target in targets
                    if not (target == ENGINE or target.startswith(ENGINE + ".")))
    assert not upward, upward


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_engine_has_no_import_cycles():
    graph = _graph()
    engine = {name: {t for t in targets if t.startswith(ENGINE)}
              for name, targets in graph.items() if name.startswith(ENGINE)}
    assert _cycles(engine) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a loop of three is one component, a tail is not part of it."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_snapshot_operations_need_no_jupyter():
    """store/ and snapshots_api (the operations the CLI and the server share) import
    neither the Jupyter layer nor the CLI, so the CLI runs them without Jupyter."""
    graph = _graph()
    upward = sorted(f"{name} imports {target}" for name, targets in graph.items()
                    if name == "jupyter_ckpt.snapshots_api" or name.startswith("jupyter_ckpt.store")
                    for target in targets
                    if target.startswith("jupyter_ckpt.jupyter") or target == "jupyter_ckpt.cli")
    assert not upward, upward
