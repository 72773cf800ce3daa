"""zq's modules form layers: no module imports, even through others, one that imports it.

Every ``import`` of a ``zq`` module counts, at module level or inside a function; only
imports under ``if TYPE_CHECKING:`` are left out, as they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import zq

PACKAGE = Path(zq.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the zq package and its subpackages, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Every node below ``node`` except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _runtime_nodes(other)
            continue
        yield child
        yield from _runtime_nodes(child)


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The zq modules that module ``name`` imports when it runs."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            stem = ".".join([*base, *(node.module.split(".") if node.module else [])])
            # ``from . import states`` imports a module; ``from .app import App`` a name.
            targets = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            # Importing ``zq.router.loop`` runs ``zq.router`` and ``zq`` first.
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                candidate = ".".join(parts[:end])
                if candidate in known and candidate != name:
                    found.add(candidate)
    # A module also runs the __init__ of each package that holds it; the package itself
    # importing its own children is not a circle of the child's making.
    return {m for m in found if not (name.startswith(m + ".") or m == "zq")}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, set(known)) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle_and_passes_a_line():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_checker_sees_imports_inside_functions_and_skips_type_checking(tmp_path):
    source = tmp_path / "zq" / "mod.py"
    source.parent.mkdir()
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .hidden import X\n"
        "def f():\n    from .inner import Y\n    import zq.other\n")
    known = {"zq.mod", "zq.hidden", "zq.inner", "zq.other", "zq"}
    assert imported("zq.mod", source, known) == {"zq.inner", "zq.other"}


def test_the_checker_walks_subpackages():
    names = modules()
    assert "zq" in names and "zq.app" in names
    assert any(name.count(".") >= 2 for name in names), "no subpackage module was found"


def test_no_module_of_zq_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert found == [], "import circles in zq: " + "; ".join(" <-> ".join(c) for c in found)
