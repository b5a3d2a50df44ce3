"""The package's floors: io -> plan -> recon -> segment -> training -> clinical -> report -> evaluate and
cohort -> cli. No module imports a higher floor (at module level or inside a function), and no import
circle. Read from the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cardiorecon"

#: Floors from the ground up; a module belongs to the floor of its longest matching prefix.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("cardiorecon", "cardiorecon.errors", "cardiorecon.volume", "cardiorecon.geometry", "cardiorecon.device",
              "cardiorecon.memory")),
    ("io", ("cardiorecon.io",)),
    ("building blocks", ("cardiorecon.lax_operator", "cardiorecon.preprocess", "cardiorecon.phantom",
                         "cardiorecon.models", "cardiorecon.diffusion", "cardiorecon.metrics", "cardiorecon.autoencoder",
                         # the data banks and checkpoints training and test-time adaptation share
                         "cardiorecon.training.data", "cardiorecon.training.checkpoint")),
    ("plan", ("cardiorecon.phase", "cardiorecon.align", "cardiorecon.plan", "cardiorecon.describe")),
    ("recon", ("cardiorecon.recon", "cardiorecon.codes")),
    ("segment", ("cardiorecon.segment", "cardiorecon.cine_segmentation")),
    ("training", ("cardiorecon.training",)),
    ("clinical", ("cardiorecon.meshes",)),
    ("report", ("cardiorecon.report",)),
    ("orchestration", ("cardiorecon.evaluator", "cardiorecon.evaluate", "cardiorecon.cohort", "cardiorecon.demo")),
    ("cli", ("cardiorecon.cli",)),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The package modules `module` imports anywhere in its source (module level or in functions)."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the module pkg.sub; `from pkg.mod import name`, pkg.mod
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        found |= {_resolve(t) for t in targets if t.startswith("cardiorecon")}
    return {t for t in found if t and t != module}


def floor(module: str) -> int:
    best, length = -1, -1
    for i, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    return best


def upward_imports(imports=imports_of) -> list[tuple[str, str]]:
    return sorted((m, t) for m in MODULES for t in imports(m) if floor(t) > floor(m))


def import_circles(imports=imports_of) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph = {m: imports(m) for m in MODULES}
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return groups


def test_every_module_has_a_floor():
    assert [m for m in MODULES if floor(m) < 0] == []


@pytest.mark.parametrize("higher", ["cardiorecon.recon", "cardiorecon.segment", "cardiorecon.report",
                                    "cardiorecon.plan", "cardiorecon.phase", "cardiorecon.align",
                                    "cardiorecon.evaluate", "cardiorecon.cohort", "cardiorecon.cli"])
def test_io_imports_nothing_above_it(higher):
    io_modules = [m for m in MODULES if m == "cardiorecon.io" or m.startswith("cardiorecon.io.")]
    assert len(io_modules) >= 5
    bad = [(m, t) for m in io_modules for t in imports_of(m) if t == higher or t.startswith(higher + ".")]
    assert bad == []


def test_no_import_runs_back_up():
    assert upward_imports() == []


def test_no_import_circle():
    assert import_circles() == []


def test_the_checks_see_an_upward_import_and_a_circle():
    """The checks can fail: an io module importing recon is caught, and so is the circle it closes."""
    assert "cardiorecon.io.nifti" in imports_of("cardiorecon.recon.pipeline")  # the real import, downward
    fake = {"cardiorecon.io.nifti": {"cardiorecon.recon.pipeline"}}

    def imports(m):
        return fake.get(m, imports_of(m))

    assert ("cardiorecon.io.nifti", "cardiorecon.recon.pipeline") in upward_imports(imports)
    assert any({"cardiorecon.io.nifti", "cardiorecon.recon.pipeline"} <= set(g) for g in import_circles(imports))
