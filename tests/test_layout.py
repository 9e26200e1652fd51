"""The house: one package, dependencies pointing one way, no import cycles.

Read from the source with ``ast`` (nothing is imported): every ``import``
and ``from ... import`` of every module of ``weightmirror``, function-level
imports included, resolved to the project's own modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: installed package -> source folder (pyproject's package-dir mapping)
SOURCES = {"weightmirror": "weightmirror", "weightmirror.circuits": "circuits", "weightmirror.models": "models",
           "weightmirror.sims": "sims", "weightmirror.figures": "figures"}
#: subpackage -> the subpackages it may import (sims -> models -> circuits; figures read results files)
ALLOWED = {
    "circuits": {"circuits"},
    "models": {"models", "circuits"},
    "figures": {"figures", "circuits"},
    "sims": {"sims", "models", "circuits", "figures"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in SOURCES.items():
        base = ROOT / folder
        for p in base.rglob("*.py"):
            rel = p.relative_to(base).with_suffix("")
            if "__pycache__" in rel.parts or (package == "weightmirror" and rel.parts[0] in SOURCES):
                continue
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports (resolved to the longest known module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("weightmirror"):
                found.add(t)
                break
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_the_package_has_its_modules(graph):
    assert len(graph) > 50
    assert {"weightmirror.api", "weightmirror.sims.training.loop", "weightmirror.sims.datasets.imagenet.loader",
            "weightmirror.models.norm", "weightmirror.circuits.brian.plasticity"} <= set(graph)


def test_no_import_cycles(graph):
    # the package root re-exports lazily (PEP 562), so `weightmirror` itself imports nothing eagerly
    assert _cycles({k: {v for v in vs if v != "weightmirror"} for k, vs in graph.items()}) == []


def test_dependencies_point_one_way(graph):
    wrong = []
    for module, imported in graph.items():
        here = _subpackage(module)
        if here is None:
            continue
        for target in imported:
            there = _subpackage(target)
            if there is not None and there not in ALLOWED[here]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_nothing_imports_the_bare_folder_names():
    """``import models`` or ``from sims import ...`` would pick up a user's own module of that name."""
    bare = ("circuits", "models", "sims", "figures")
    offenders = []
    for folder in ("weightmirror", *bare, "tests", "bench", "docs"):
        for p in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                offenders += [f"{p.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in bare]
    assert offenders == []
