"""Which source files decide a step's result: the modules its entry point reaches, from the import graph.

A step's code fingerprint (the Prefect cache key; the code deps of its DVC stage) must change whenever code the
step runs changes, including code reached through shared helpers or through imports inside functions. A list
kept by hand goes stale the day someone adds an import, so the list is read from the source: an AST walk over
the installed `detops`, `flows` and `tasks` packages (never into torch or mlflow), module file by module file.

What the walk counts:
- every `import` and `from ... import` anywhere in a module (inside functions too), except under
  `if TYPE_CHECKING:`, which never runs; importing `a.b.c` also runs `a` and `a.b`, so their `__init__` count;
- `importlib.import_module("a.b")` / `__import__("a.b")` with a literal name; a computed name cannot be followed,
  and is an error (`CodeGraphError`) rather than a silently missing dependency;
- the third-party libraries a step reaches: the versions of those that decide results join the key.

Ambient modules (`AMBIENT_MODULES`) are neither hashed nor walked through: no result depends on them beyond the params
already in the key (where files go, how progress is printed, how errors read). A test checks that they reach
only each other, so leaving them out hides no result-deciding module.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata, util
from pathlib import Path

from detops.errors import DetopsError

OWN_PACKAGES = ("detops", "flows", "tasks")

AMBIENT_PACKAGES = ("detops.config",)  # the params model: its values are hashed, its code only validates them
AMBIENT_MODULES = (
    "detops",  # the package root: sets telemetry opt-outs
    "detops.console",
    "detops.cpus",
    "detops.progress",
    "detops.errors",
    "detops.atomic",
    "detops.filehash",
    "detops.locking",
    "detops.workspace",
    "detops.pipeline",
    "detops.codegraph",
    "detops.steps",
    "detops.steps.graph",
    "detops.registry.names",  # registry name rules, checked when params load
    "detops.registry",  # the package of registry.names, run with it: a docstring, no code
)

# Libraries that only talk, print, parse or validate: a new version changes no number a step produces.
AMBIENT_LIBRARIES = frozenset({
    "mlflow", "prefect", "rich", "typer", "click", "tqdm", "httpx", "requests", "pydantic", "yaml", "filelock",
    "typing_extensions", "dvc",
    "psutil",  # sizes the training image cache: where images are held, never which pixels
    "fsspec",  # copies the resume checkpoint to and from paths.resume_store: bytes, not numbers
})


class CodeGraphError(DetopsError):
    """An import the walk cannot follow (a computed module name) or a module that is not installed."""


@dataclass(frozen=True)
class Reach:
    """What a module reaches: its own-package module files by dotted name, and the third-party libraries."""

    modules: dict[str, Path] = field(default_factory=dict)
    libraries: frozenset[str] = frozenset()


def is_ambient(module: str) -> bool:
    return module in AMBIENT_MODULES or any(module == p or module.startswith(p + ".") for p in AMBIENT_PACKAGES)


@cache
def package_root(top: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    spec = util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def module_file(module: str) -> Path | None:
    """The source file of an own-package module (`__init__.py` for a package), or None when there is none."""
    top, *rest = module.split(".")
    root = package_root(top)
    if root is None:
        return None
    base = root.joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def reach(entry: str) -> Reach:
    """Every non-ambient own module `entry` reaches (itself included) and the libraries they import."""
    if module_file(entry) is None:
        raise CodeGraphError(f"code graph: module {entry} is not installed")
    seen: dict[str, Path] = {}
    libraries: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen or is_ambient(name):
            continue
        path = module_file(name)
        if path is None:
            continue  # `from package import name` where name is not a module
        seen[name] = path
        found = file_imports(name, path)
        if found.computed:
            raise CodeGraphError(
                f"{path}:{found.computed[0]}: a module imported by a computed name cannot be followed by the code "
                "graph, so a change in it would not re-run the step. Import the module by its name.")
        for imported in found.names:
            top = imported.split(".")[0]
            if top in OWN_PACKAGES:
                todo.extend(_with_parents(imported))
            elif top not in sys.stdlib_module_names and top != "__future__":
                libraries.add(top)
    return Reach(dict(sorted(seen.items())), frozenset(libraries))


@dataclass(frozen=True)
class Imports:
    """What one module imports: absolute module names, and the lines importing a computed name."""

    names: tuple[str, ...]
    computed: tuple[int, ...]


def file_imports(module: str, path: Path) -> Imports:
    """`imports_of` for the file as it is now (memoised per file version)."""
    stat = path.stat()
    return imports_of(module, path, stat.st_mtime_ns, stat.st_size)


@cache
def imports_of(module: str, path: Path, mtime_ns: int, size: int) -> Imports:
    """The absolute module names `module` (at `path`) imports, wherever the import statement stands (memoised
    per file version: `mtime_ns` and `size` are part of the key)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    computed: list[int] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(first.value)
            else:
                computed.append(node.lineno)
    return Imports(tuple(found), tuple(sorted(computed)))


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under `if TYPE_CHECKING:` (imports for the type checker only)."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        out.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _is_dynamic_import(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id in ("import_module", "__import__")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def _absolute(module: str, level: int, package: str) -> str:
    if level == 0:
        return module
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{module}" if module else base


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def library_versions(libraries: frozenset[str]) -> dict[str, str]:
    """Installed version of each result-deciding library (by import name), `absent` where not installed."""
    dists = _distributions()
    out = {}
    for name in sorted(libraries - AMBIENT_LIBRARIES):
        versions = sorted({_version(dist) for dist in dists.get(name, [])})
        out[name] = "+".join(versions) if versions else "absent"
    return out


@cache
def _distributions() -> dict[str, list[str]]:
    return {k: list(v) for k, v in metadata.packages_distributions().items()}


def _version(dist: str) -> str:
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return f"{dist}==absent"
