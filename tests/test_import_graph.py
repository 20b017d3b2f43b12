"""No import circle among nvdra's modules, counting every import: at module level, inside functions and
under ``TYPE_CHECKING`` (deferring an import hides a circle from the interpreter; it does not remove it).

The graph is read from the source with :mod:`ast`. ``from package import submodule`` is an edge to the
submodule only, as the import system resolves it; generated protobuf modules are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import nvdra

SRC = Path(nvdra.__file__).resolve().parent.parent
GENERATED = "_proto"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "nvdra").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(node: ast.AST, package: str) -> Iterator[tuple[str, list[str]]]:
    """(module named, names taken from it) for each import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, []
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*parts, *([base] if base else [])])
        yield base, [alias.name for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Each nvdra module → the nvdra modules it imports anywhere in its source."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules if GENERATED not in name.split(".")}
    for name, edges in graph.items():
        path = modules[name]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for base, names in _imported(node, package):
                submodules = [f"{base}.{n}" for n in names]
                named = submodules if names and all(s in modules for s in submodules) else [base, *submodules]
                for target in {owner(t) for t in named if t.startswith("nvdra")}:
                    if target is not None and target != name and target in graph:
                        edges.add(target)
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_counting_deferred_imports() -> None:
    graph = import_graph()
    assert len(graph) > 150  # the whole package was read
    assert circles(graph) == []


def test_the_check_sees_a_circle_through_a_function_level_import() -> None:
    """The detector itself: a deferred import closing a loop is a circle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    graph = import_graph()
    graph["nvdra.core.errors"].add("nvdra.plugins.gpu.driver")  # what a lazy import there would add
    assert any("nvdra.core.errors" in c and "nvdra.plugins.gpu.driver" in c for c in circles(graph))
