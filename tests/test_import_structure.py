"""The modules of ``innsight`` import each other without a cycle.

The import graph is read from the source with :mod:`ast`, not by importing it:
every ``import`` and ``from ... import`` of an ``innsight`` module is an edge,
wherever it stands (module level or inside a function, so a lazy import that
only hides a cycle still counts). Two kinds of statement are not edges: imports
of other packages (a function-level ``import keras`` defers an optional heavy
dependency and is none of our structure), and imports under
``if TYPE_CHECKING:``, which never run. An edge goes to the module named:
``from innsight.a import b`` reads the module ``innsight.a.b`` where there is one,
else ``innsight.a`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import innsight

PACKAGE_DIR = Path(innsight.__file__).parent

#: Function-level imports of our own modules kept on purpose, each with its reason: they
#: run on first use only and are left out of the structure (every other one counts).
DEFERRED = {
    ("innsight.methods.result", "innsight.plotting"):
        "Result.plot* load plotting (and plotnine or plotly) on first use, so that "
        "`import innsight` loads no plotting library (tests/test_import.py)",
}


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``package_dir``."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` at any depth, but those that only run for
    type checkers (the body of ``if TYPE_CHECKING:``; its ``else`` branch runs)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _imports(node)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules among ``modules`` that module ``name`` (its source at ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the package, `level - 1` packages up
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = module_files(package_dir)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with more than one module
    (Tarjan's algorithm), each sorted; these are exactly its import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_no_import_cycle_inside_innsight() -> None:
    graph = import_graph(PACKAGE_DIR)
    for source, target in DEFERRED:
        assert target in graph[source], f"DEFERRED lists {source} -> {target}, which is gone"
        graph[source].discard(target)
    assert "innsight.converter.keras_front" in graph  # the walk found the modules
    found = cycles(graph)
    described = [
        ", ".join(c) + "; edges: "
        + ", ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in found
    ]
    assert not found, "import cycles inside innsight:\n" + "\n".join(described)


# ---- the checker itself, on small packages with a known answer ------------------------


def _write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    package_dir = tmp_path / "pkg"
    for relative, source in files.items():
        path = package_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return package_dir


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(  # a function-level import closes the loop: still a cycle
            {"__init__.py": "", "a.py": "from pkg.b import f\n",
             "b.py": "def f():\n    from pkg import a\n"},
            [["pkg.a", "pkg.b"]], id="lazy-import-counts",
        ),
        pytest.param(  # relative imports over three modules
            {"__init__.py": "", "a.py": "from . import b\n", "b.py": "from .c import x\n",
             "c.py": "from .a import y\n"},
            [["pkg.a", "pkg.b", "pkg.c"]], id="relative-three-modules",
        ),
        pytest.param(  # type-checking imports never run; other packages are no edges
            {"__init__.py": "", "a.py": "from pkg.b import f\n",
             "b.py": "from typing import TYPE_CHECKING\nimport keras\n"
                     "if TYPE_CHECKING:\n    from pkg.a import g\n"
                     "def f():\n    import numpy\n"},
            [], id="type-checking-and-third-party",
        ),
        pytest.param(  # a one-way chain through a shared module
            {"__init__.py": "", "front.py": "from pkg import ops, state\n",
             "ops.py": "from pkg.state import Value\n", "state.py": "import os\n"},
            [], id="one-way",
        ),
    ],
)
def test_cycles_found_in_small_packages(tmp_path: Path, files: dict[str, str],
                                        expected: list[list[str]]) -> None:
    assert cycles(import_graph(_write_package(tmp_path, files))) == expected
