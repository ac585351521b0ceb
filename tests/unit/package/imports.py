"""iamdb's import graph read from its source: every import of one iamdb module by another,
module-level, function-local or type-only (inside ``if TYPE_CHECKING:``), as arrows.

What the layering test checks, and what ``python -m tests.unit.package.imports`` prints:
modules, arrows by kind, the longest chain of module-level imports, and the cycles.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.paths import PACKAGE


@dataclass(frozen=True)
class Arrow:
    """``source`` imports ``target`` (dotted module names), at ``line``, of ``kind``:
    ``module`` (at import time), ``function`` (inside a function), ``type`` (for the checker)."""

    source: str
    target: str
    line: int
    kind: str


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def arrows() -> list[Arrow]:
    known = modules()
    found: list[Arrow] = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        _walk(tree, name, package, known, "module", found)
    return found


def _walk(node: ast.AST, name: str, package: str, known: dict[str, Path], kind: str,
          found: list[Arrow]) -> None:  # fmt: skip
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            _walk(child, name, package, known, "type", found)
        for child in node.orelse:
            _walk(child, name, package, known, kind, found)
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and kind == "module":
        kind = "function"
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for target in _targets(node, package, known):
            found.append(Arrow(name, target, node.lineno, kind))
    for child in ast.iter_child_nodes(node):
        _walk(child, name, package, known, kind, found)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    base = node.module or ""
    if node.level:
        parent = package.split(".")
        parent = parent[: len(parent) - node.level + 1]
        base = ".".join([*parent, base] if base else parent)
    out = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        if full in known:
            out.append(full)  # from iamdb import _registry: the submodule
        elif base in known:
            out.append(base)
    return sorted(set(out))


def cycles(edges: list[Arrow]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a self-import)."""
    graph: dict[str, set[str]] = {}
    for a in edges:
        if a.source != a.target:
            graph.setdefault(a.source, set()).add(a.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def longest_chain(edges: list[Arrow]) -> list[str]:
    """The longest path of module-level imports (the graph must have no cycle there)."""
    graph: dict[str, set[str]] = {}
    for a in edges:
        if a.kind == "module" and a.source != a.target:
            graph.setdefault(a.source, set()).add(a.target)
    best: dict[str, list[str]] = {}

    def chain(v: str, seen: frozenset[str]) -> list[str]:
        if v in best:
            return best[v]
        longest: list[str] = []
        for w in graph.get(v, ()):
            if w not in seen:
                found = chain(w, seen | {w})
                if len(found) > len(longest):
                    longest = found
        best[v] = [v, *longest]
        return best[v]

    return max((chain(v, frozenset({v})) for v in graph), key=len, default=[])


def main() -> None:
    edges = arrows()
    kinds = {k: sum(1 for a in edges if a.kind == k) for k in ("module", "function", "type")}
    chain = longest_chain(edges)
    print(f"modules: {len(modules())}")
    print(f"arrows: {len({(a.source, a.target, a.kind) for a in edges})} "
          f"({', '.join(f'{v} {k}' for k, v in kinds.items())})")  # fmt: skip
    print(f"longest module-level chain: {len(chain)}: {' -> '.join(chain)}")
    found = cycles(edges)
    print(f"cycles: {len(found)}")
    for component in found:
        print(f"  {len(component)}: {', '.join(component)}")


if __name__ == "__main__":
    main()
