"""The import contract: the layers' one-way arrow and no new import circle.

`router` -> `health` -> `federation` -> `hub` (docs/architecture.md, "The map"), with
`benchmarks` above them all. A module may import its own layer and the layers below
it, never one above. Every import counts, wherever it is written: at the top of a
module, inside a function (a lazy import), under `if TYPE_CHECKING:`, and by name
(`importlib.import_module("router.serve")`, `__import__`). A module that imports by a
computed name (the CLI's command table) is taken to import every module of ours that
one of its strings names, since that is what it may load.

Import circles between files are refused too (issue 19 removed the last three).

The imports are read from the source (`ast`), not by importing anything, so a
module that is never imported by the suite is checked all the same.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom: a module may import its own layer and any layer after it.
LAYERS = ("benchmarks", "router", "health", "federation", "hub")

_IMPORT_CALLS = {"import_module", "__import__", "find_spec", "resolve_name"}


@dataclass(frozen=True)
class Import:
    source: str   # importing module
    target: str   # imported module of ours
    line: int
    how: str      # "import", "by name", "by computed name"


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the layers: dotted name -> file."""
    modules: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that importing `name` loads last (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    computed = False

    def add(name: str, line: int, how: str) -> None:
        target = _ours(name, modules)
        if target is not None and target != module:
            found.append(Import(module, target, line, how))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, "import")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(module, path).split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for alias in node.names:
                # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod
                add(f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix, node.lineno, "import")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in _IMPORT_CALLS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    add(first.value.partition(":")[0], node.lineno, "by name")
                else:
                    computed = True
    if computed:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.partition(":")[0]
                if text.split(".")[0] in LAYERS and all(p.isidentifier() for p in text.split(".")):
                    add(text, node.lineno, "by computed name")
    return found


def all_imports(root: Path = ROOT) -> list[Import]:
    modules = module_files(root)
    return [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]


def back_edges(imports: list[Import]) -> list[Import]:
    """Imports from a layer to a layer above it."""
    rank = {layer: position for position, layer in enumerate(LAYERS)}
    return [i for i in imports if rank[i.target.split(".")[0]] < rank[i.source.split(".")[0]]]


def circles(imports: list[Import]) -> set[frozenset[str]]:
    """The import circles between modules: strongly connected components of more than one module."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small enough to recurse
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _show(imports: list[Import]) -> str:
    return "\n".join(f"  {i.source} -> {i.target} ({i.how}, line {i.line})" for i in dict.fromkeys(imports))


def test_no_import_runs_against_the_layers() -> None:
    against = back_edges(all_imports())
    assert not against, "imports against the arrow " + " -> ".join(LAYERS) + ":\n" + _show(against)


def test_no_import_circle() -> None:
    imports = all_imports()
    found = circles(imports)
    assert not found, "import circles:\n" + "\n".join(
        "  " + ", ".join(sorted(c)) + "\n" + _show([i for i in imports if i.source in c and i.target in c])
        for c in found)


# -- the contract's own reading: each kind of import it must see ------------------------------


def _house(tmp_path: Path, files: dict[str, str]) -> list[Import]:
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return all_imports(tmp_path)


@pytest.mark.parametrize("text", [
    "import router.app\n",
    "from router import app\n",
    "from router.app import create_app\n",
    "def later():\n    from router.app import create_app\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import router.app\n",
    "import importlib\nimportlib.import_module('router.app')\n",
    "__import__('router.app')\n",
    "import importlib\nCOMMANDS = {'serve': 'router.app:main'}\n"
    "def load(name):\n    return importlib.import_module(COMMANDS[name].partition(':')[0])\n",
])
def test_every_kind_of_import_against_the_arrow_is_seen(tmp_path: Path, text: str) -> None:
    files = {"router/app.py": "", "federation/cli.py": text}
    assert [(i.source, i.target) for i in back_edges(_house(tmp_path, files))] == [("federation.cli", "router.app")]


def test_relative_imports_and_a_circle_are_seen(tmp_path: Path) -> None:
    imports = _house(tmp_path, {"hub/a.py": "from . import b\n", "hub/b.py": "from .a import thing\n",
                                "hub/c.py": "from .b import other\n"})
    assert circles(imports) == {frozenset({"hub.a", "hub.b"})}
    assert not back_edges(imports)
