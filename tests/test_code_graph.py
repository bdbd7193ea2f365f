"""A step's code fingerprint comes from the import graph (`detops.codegraph`): every module file its entry module
reaches, lazy imports included, and the versions of the libraries that decide its results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import detops.codegraph as codegraph
import detops.pipeline as pipeline
from detops.codegraph import (
    AMBIENT_MODULES,
    AMBIENT_PACKAGES,
    CodeGraphError,
    file_imports,
    is_ambient,
    module_file,
    reach,
)
from detops.steps.graph import STEPS

CACHEABLE = [name for name, step in STEPS.items() if step.cacheable]


@pytest.fixture
def fakepkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package of ours with every kind of import the walk must follow, or refuse."""
    root = tmp_path / "site" / "fakepkg"
    root.mkdir(parents=True)
    files = {
        "__init__.py": "",
        "entry.py": ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\nfrom . import rel\n"
                     "if TYPE_CHECKING:\n    from fakepkg import typed\n"
                     "def run() -> None:\n    from fakepkg.sub import helper\n"),
        "rel.py": "import importlib\nimportlib.import_module('fakepkg.literal')\n",
        "literal.py": "",
        "typed.py": "",
        "sub/__init__.py": "import json\n",
        "sub/helper.py": "import numpy\nfrom ..deep import x\n",
        "deep.py": "x = 1\n",
        "dyn.py": "import importlib\n\n\ndef load(name: str) -> object:\n    return importlib.import_module(name)\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.syspath_prepend(str(root.parent))
    monkeypatch.setattr(codegraph, "OWN_PACKAGES", (*codegraph.OWN_PACKAGES, "fakepkg"))
    codegraph.package_root.cache_clear()  # each test's package lies in its own folder
    yield root
    codegraph.package_root.cache_clear()


def test_the_walk_follows_lazy_relative_and_literal_imports_but_not_type_checking_ones(fakepkg: Path) -> None:
    found = reach("fakepkg.entry")
    assert set(found.modules) == {"fakepkg", "fakepkg.entry", "fakepkg.rel", "fakepkg.literal", "fakepkg.sub",
                                  "fakepkg.sub.helper", "fakepkg.deep"}
    assert found.modules["fakepkg.sub"] == fakepkg / "sub" / "__init__.py"
    assert found.libraries == {"numpy"}  # json is the standard library


def test_the_walk_fails_on_an_import_module_it_cannot_follow(fakepkg: Path) -> None:
    with pytest.raises(CodeGraphError, match=r"dyn\.py:5: a module imported by a computed name"):
        reach("fakepkg.dyn")


def test_an_import_added_to_a_file_is_followed_in_the_same_process(fakepkg: Path) -> None:
    assert "fakepkg.deep" not in reach("fakepkg.literal").modules
    (fakepkg / "literal.py").write_text("from fakepkg import deep\n# a longer file: another size\n")
    assert "fakepkg.deep" in reach("fakepkg.literal").modules


@pytest.mark.parametrize("verb", list(STEPS))
def test_each_step_fingerprint_covers_every_module_file_it_reaches(verb: str, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    step = STEPS[verb]
    files = pipeline.code_files(step)
    assert step.module in files and all(not is_ambient(m) for m in files)
    before = pipeline.code_fingerprint(step)
    real = pipeline.file_digest
    for module, path in files.items():
        monkeypatch.setattr(pipeline, "file_digest", lambda p, _edited=path: real(p) + ("x" if p == _edited else ""))
        assert pipeline.code_fingerprint(step) != before, f"{verb}: an edit of {module} leaves its key unchanged"
    monkeypatch.setattr(pipeline, "file_digest", real)


def test_steps_reach_the_shared_code_they_run_and_not_the_code_they_do_not() -> None:
    """The stale-cache bug: train's validation mAP and export's variant scores go through the mAP code."""
    metric = "detops.evaluation.map_metric"
    for verb in ("train", "evaluate", "export", "promote"):
        assert metric in pipeline.code_files(STEPS[verb]), verb
    for verb in ("sample", "import", "validate", "split"):
        reached = pipeline.code_files(STEPS[verb])
        assert not any(m.startswith(("detops.training", "detops.model", "detops.evaluation")) for m in reached), verb
    assert not any("detops.monitoring.drift" in pipeline.code_files(STEPS[v]) for v in CACHEABLE)


def test_ambient_modules_reach_only_each_other() -> None:
    """Leaving an ambient module out of a key hides nothing: whatever it imports of ours is ambient too."""
    ambient = [*AMBIENT_MODULES, *(m for p in AMBIENT_PACKAGES for m in _package_modules(p))]
    for module in ambient:
        path = module_file(module)
        assert path is not None, f"{module} is listed as ambient but does not exist"
        ours = [m for m in file_imports(module, path).names
                if m.split(".")[0] in codegraph.OWN_PACKAGES and module_file(m) is not None]
        assert all(is_ambient(m) for m in ours), f"{module} imports {[m for m in ours if not is_ambient(m)]}"


def test_a_result_library_version_joins_the_key_of_the_steps_that_import_it(monkeypatch: pytest.MonkeyPatch
                                                                            ) -> None:
    before = {verb: pipeline.code_fingerprint(STEPS[verb]) for verb in ("import", "export")}
    real = codegraph._version
    monkeypatch.setattr(codegraph, "_version", lambda dist: real(dist) + ("-new" if "onnxruntime" in dist else ""))
    assert pipeline.code_fingerprint(STEPS["export"]) != before["export"]
    assert pipeline.code_fingerprint(STEPS["import"]) == before["import"]


def test_package_inits_re_export_nothing_but_the_public_apis() -> None:
    """An `__init__` that imports its submodules makes every importer of one submodule reach them all: only the
    params model, the format registry and the one way to run a model (`detops.inference`) do, on purpose."""
    public = {"detops.config", "detops.formats", "detops.inference"}
    root = module_file("detops")
    assert root is not None
    for init in sorted(root.parent.rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(root.parent.parent).parts)
        ours = [m for m in file_imports(package, init).names if m.startswith("detops.")]
        assert package in public or not ours, f"{package}/__init__.py imports {ours}"


def _package_modules(package: str) -> list[str]:
    path = module_file(package)
    assert path is not None
    return [package, *(f"{package}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__")]
