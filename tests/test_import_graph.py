"""No import cycle in `detops`: the code graph's AST walk (`detops.codegraph.file_imports`) over the package
source, imports inside functions included.

A cycle through a lazy import works until someone moves the import to the top of the module, and it means two
modules that cannot be understood (or fingerprinted) apart. Imports under `if TYPE_CHECKING:` never run and are
not counted. Importing `a.b.c` also runs `a/__init__` and `a/b/__init__`, so those count, except the packages the
importing module sits in (they are already being initialised when it runs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detops.codegraph import file_imports

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "detops"


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> source file of every module of the package (a package is its `__init__.py`)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules importing it runs (explicit targets and the packages above them)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        own_parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if path.name == "__init__.py":
            own_parents.add(name)
        edges = set()
        for target in file_imports(name, path).names:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix not in own_parents and prefix != name:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path `[a, b, ..., a]`, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        iterators = [iter(sorted(graph[start]))]
        state[start] = 1
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iterators.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_detops_has_no_import_cycle() -> None:
    known = modules()
    assert "detops.steps.monitor" in known and "detops.reporting.page" in known
    cycle = find_cycle(import_graph(known))
    assert cycle is None, "import cycle in detops: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("lazy", [False, True])
def test_the_walk_finds_a_cycle_through_a_lazy_import(tmp_path: Path, lazy: bool) -> None:
    """The walk itself: a cycle closed by an import inside a function is named; TYPE_CHECKING is not one."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from pkg.sub.b import f\n")
    (root / "a.py").write_text("from pkg.sub import f\n")
    (root / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
        + ("def f():\n    from .. import a\n" if lazy else "def f():\n    pass\n"))
    cycle = find_cycle(import_graph(modules(root)))
    if lazy:
        assert cycle is not None and set(cycle) == {"pkg.a", "pkg.sub", "pkg.sub.b"}
        assert cycle[0] == cycle[-1]
    else:
        assert cycle is None
