"""The architecture as tests: no import cycle in `epbench/` or either backend, and no function
in `epbench/` longer than `MAX_LINES` lines (the layers themselves are checked by `lint-imports`,
contracts in pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("epbench", "epbench_torch", "epbench_jax")
MAX_LINES = 80


def _cycles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan) below `package`."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph.find_modules_directly_imported_by(module)):
            if other not in modules and not other.startswith(package + "."):
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    graph = grimp.build_graph(package, include_external_packages=False)
    # A package's __init__ importing its own submodules is not a cycle of the architecture.
    cycles = [c for c in _cycles(graph, package) if not _only_parent_child(c)]
    assert cycles == [], f"import cycles in {package}: {cycles}"


def _only_parent_child(component: list[str]) -> bool:
    return len(component) == 2 and component[1].startswith(component[0] + ".")


def test_no_function_longer_than_the_limit() -> None:
    long = []
    for path in sorted((ROOT / "epbench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == [], f"functions over {MAX_LINES} lines: {long}"


def test_no_network_probing_by_name() -> None:
    """Optional capabilities are protocols tested with isinstance, never probed by name."""
    hits = []
    for path in sorted((ROOT / "epbench").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "getattr(network" in line or "hasattr(network" in line:
                hits.append(f"{path.relative_to(ROOT)}:{number}")
    assert hits == []
