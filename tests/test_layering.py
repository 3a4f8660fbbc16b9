"""The packages of gateway/ import each other without cycles, and no private name crosses modules.

A unit is a top-level module (``gateway.config``) or a subpackage (``gateway.safety``); an edge is
any ``import gateway.x`` / ``from gateway.x import ...`` between two units, wherever it sits in
the module (a lazy import inside a function counts: it still ties the packages together).

Imports under ``if TYPE_CHECKING:`` are left out: they never run, so they cannot make import order
matter, and they are how a feature names a type it is handed (the root ``Config``, the
``GatewayState``) without depending on the module that builds it. What runs decides the layering.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import gateway

PACKAGE = Path(gateway.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                hidden.update(id(n) for n in ast.walk(stmt))
    return hidden


def _imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    hidden = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in hidden:
            yield node


def _trees() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield _module_name(path), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _unit_graph() -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the module-level edges behind it (for the failure message)."""
    graph: dict[str, dict[str, list[str]]] = {}
    for module, tree in _trees():
        source = _unit(module)
        graph.setdefault(source, {})
        for node in _imports(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level or not node.module or not node.module.startswith("gateway"):
                    continue
                targets = [f"gateway.{a.name}" for a in node.names] if node.module == "gateway" else [node.module]
            else:
                targets = [a.name for a in node.names if a.name.startswith("gateway.")]
            for target in targets:
                unit = _unit(target)
                if unit != source:
                    graph[source].setdefault(unit, []).append(f"{module} -> {target}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for other in graph.get(unit, {}):
            if other not in index:
                visit(other)
                low[unit] = min(low[unit], low[other])
            elif other in on_stack:
                low[unit] = min(low[unit], index[other])
        if low[unit] == index[unit]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == unit:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for unit in sorted(graph):
        if unit not in index:
            visit(unit)
    return found


def test_no_import_cycles_between_packages() -> None:
    graph = _unit_graph()
    report = []
    for component in _cycles(graph):
        report.append(f"cycle between {component}:")
        report += [f"  {edge}" for a in component for b in component for edge in graph[a].get(b, [])]
    assert not report, "\n".join(report)


def test_the_graph_sees_imports() -> None:
    """The checker reads real edges (a parser that saw nothing would pass the test above)."""
    graph = _unit_graph()
    assert "fields" in graph["config"]
    assert "config" in graph["app"]
    assert "safety" in graph["admin"]
    # TYPE_CHECKING-only: gateway.keys names GatewayState for mypy alone.
    assert graph["keys"] == {}


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b": ["a.x -> b.y"]}, "b": {"c": ["b.y -> c.z"]}, "c": {"a": ["c.z -> a.x"]}, "d": {}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_private_names_cross_modules() -> None:
    """``from gateway.x import _name`` reaches into another module's internals; make it public instead."""
    crossings = [
        f"{module}: from {node.module} import {alias.name}"
        for module, tree in _trees()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not crossings, "\n".join(crossings)
