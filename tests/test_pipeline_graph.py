"""The step graph is declared once (detops.steps.graph): dvc.yaml is generated from it, the Prefect cache
key and the flow read it, and a contract test runs each step alone, in a process and a workspace of its own, and
checks that it reads only the files and params it declares and imports only code its fingerprint covers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from detops.codegraph import OWN_PACKAGES, is_ambient
from detops.config import VERBS, load_params
from detops.dataset.canonical import image_path
from detops.pipeline import (
    code_files,
    dvc_yaml,
    fingerprint,
    is_current,
    record_run,
)
from detops.steps.graph import AMBIENT, RETRAIN, STEPS
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
SANDBOX = Path(__file__).with_name("_step_sandbox.py")
# the params; locks, runs and resume points; caches; the repository's git and DVC folders (provenance)
AMBIENT_FILES = {"params.yaml", ".detops", ".cache", ".git", ".dvc"}


def repo_ws() -> Workspace:
    return Workspace.at(REPO, load_params(REPO / "params.yaml"))


def test_committed_dvc_yaml_is_generated_from_the_declaration() -> None:
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml()


def test_dvc_parses_the_stages_and_they_match_the_flow_and_the_cli(tmp_path: Path) -> None:
    """Parsed with DVC's own loader: every stage is a verb, calls `detops <verb>`, lists the declared params."""
    from dvc.repo import Repo

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    with Repo(str(tmp_path)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
    staged = [name for name, step in STEPS.items() if step.dvc]
    assert set(stages) == {"code", *staged} and set(STEPS) <= set(VERBS)
    assert [v for v in staged if v != "sample"] == list(RETRAIN)  # the flow's order is the graph's
    assert set(STEPS) - set(staged) == {"monitor"}  # checks deliveries outside the pipeline: no stage
    from detops.cli import app

    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    assert stages.pop("code").cmd == "detops code-fingerprint"
    for name, stage in stages.items():
        assert stage.cmd == f"detops {name}" and name in commands
        listed = [p for dep in stage.deps if hasattr(dep, "params") for p in dep.params]
        assert sorted(listed) == sorted(STEPS[name].params), name
        assert STEPS[name].params[0] == name
    # outputs chain: each stage's data deps are an earlier stage's outputs (or the raw source)
    ws = repo_ws()
    produced = {str(ws.fill(o.path)) for step in STEPS.values() for o in step.outs}
    for step in STEPS.values():
        for dep in step.deps:
            raw_input = dep in ("${import.source}", "${import.batches}")
            assert raw_input or str(ws.fill(dep)) in produced, (step.name, dep)


def test_code_deps_are_the_fingerprint_files_the_code_stage_writes(tmp_path: Path) -> None:
    from detops.pipeline import code_fingerprint, write_code_fingerprints

    text = dvc_yaml()
    assert "detops code-fingerprint" in text and ".detops/code/train.sha256" in text and "src/detops" not in text
    ws = Workspace.at(tmp_path, load_params(None))
    written = write_code_fingerprints(ws)
    assert set(written) == {name for name, step in STEPS.items() if step.dvc}
    assert written["train"].read_text().strip() == code_fingerprint(STEPS["train"])  # what the Prefect key holds


def test_param_references_resolve_against_the_workspace_params(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(None, ["import.source=/data/mine", "paths.models=out/m"]))
    assert ws.fill(STEPS["import"].deps[0]) == Path("/data/mine")
    assert ws.fill(STEPS["import"].deps[1]) == tmp_path / "data/raw/accepted"
    assert ws.outputs("export")["folder"] == tmp_path / "out/m/export"


def test_fingerprint_follows_declared_params_deps_and_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = Workspace.at(tmp_path, load_params(None))
    dep = tmp_path / "data/prepared/dataset.json"
    dep.parent.mkdir(parents=True)
    dep.write_text("{}")
    step = STEPS["validate"]
    first = fingerprint(ws, step)
    assert fingerprint(ws, step) == first
    dep.write_text('{"images": []}')
    assert fingerprint(ws, step) != first
    changed = Workspace.at(tmp_path, load_params(None, ["validate.min_box_area=4"]))
    assert fingerprint(changed, step) != fingerprint(ws, step)
    other = Workspace.at(tmp_path, load_params(None, ["train.epochs=2"]))  # not a section validate reads
    assert fingerprint(other, step) == fingerprint(ws, step)
    # train declares evaluate (its validation decodes with those thresholds): a change there re-runs it
    train = STEPS["train"]
    nms = Workspace.at(tmp_path, load_params(None, ["evaluate.nms_iou=0.5"]))
    assert fingerprint(nms, train) != fingerprint(ws, train)


def test_a_recorded_run_is_current_until_an_output_is_lost_or_edited(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(None))
    step = STEPS["import"]
    out = ws.outputs("import")["dataset"]
    out.parent.mkdir(parents=True)
    out.write_text("{}")
    record_run(ws, step, "k1")
    assert is_current(ws, step, "k1") and not is_current(ws, step, "k2")
    out.write_text('{"edited": true}')
    assert not is_current(ws, step, "k1")
    record_run(ws, step, "k1")
    out.unlink()
    assert not is_current(ws, step, "k1")


def _copy(src: Path, dst: Path) -> None:
    """A file or a folder, to the same place in another workspace."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def _named_images(box: Path, deps: list[str]) -> set[str]:
    """The images that the declared dataset files name, relative to the sandbox: their sha1 is in the dataset
    file, so reading them is reading that declared dep."""
    named: set[str] = set()
    for dep in deps:
        path = box / dep
        if path.suffix != ".json" or not path.is_file():
            continue
        dataset = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(dataset, dict) and isinstance(dataset.get("images"), list) and "info" in dataset:
            for image in dataset["images"]:
                named.add(image_path(dataset, image, box).relative_to(box).as_posix())
    return named


def _within(path: str, allowed: set[str]) -> bool:
    """`path` is one of `allowed` or inside one (a folder)."""
    return any(path == a or path.startswith(a + "/") for a in allowed)


def _own(path: str, outs: set[str]) -> bool:
    """A declared output, a file inside one, or inside its atomic write's temporary sibling `.<name>.*`
    (`detops.atomic`)."""
    def temporary(out: str) -> str:
        parent, _, name = out.rpartition("/")
        return f"{parent}/.{name}." if parent else f".{name}."

    return _within(path, outs) or any(path.startswith(temporary(out)) for out in outs)


@pytest.mark.slow
def test_each_step_in_a_process_of_its_own_reads_only_what_it_declares(tmp_path: Path) -> None:
    """Each step runs in a fresh interpreter (`_step_sandbox.py`), in a sandbox workspace holding only
    params.yaml, its declared deps (copied from the outputs of the steps before it) and the raw images those
    name. Every file it opens for reading, lists or looks for under the sandbox must be one of those, its own
    output (read back: split's assignments, monitor's ledger; or the folders they go in) or ambient (`.detops/`
    locks, runs and resume points, `.cache/`); every file it
    leaves is a declared output; every module of ours it imports is in its code fingerprint; every params
    section it reads is declared. A side channel between steps (a file written by one and read by another
    without a declaration) fails here: the file is absent, and reading it is flagged.

    The MLflow store is ambient and shared: one SQLite file outside the sandboxes, its artifacts beside it."""
    import mlflow
    from test_flow_retrain import TINY

    store = tmp_path / "mlflow"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    overrides = [*TINY, "train.epochs=1", f"mlflow.tracking_uri={uri}"]
    params = load_params(REPO / "params.yaml", overrides)
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(
        params.mlflow.experiment, artifact_location=(store / "artifacts").as_uri())
    produced = tmp_path / "produced"  # every output of the steps run so far, laid out as in a workspace
    cwd = tmp_path / "cwd"  # the steps' working directory: a step writes only under its workspace
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for verb, step in STEPS.items():
        box = tmp_path / verb
        box.mkdir()
        shutil.copy(REPO / "params.yaml", box / "params.yaml")
        ws = Workspace.at(box, params)
        deps = [ws.fill(dep).relative_to(box).as_posix() for dep in step.deps]
        for dep in deps:
            if (produced / dep).exists():
                _copy(produced / dep, box / dep)
            else:  # only the raw inputs may be missing (no accepted batches yet)
                assert dep not in {ws.fill(o.path).relative_to(box).as_posix() for s in STEPS.values()
                                   for o in s.outs}, f"{verb}: declared dep {dep} was not produced"
        images = _named_images(box, deps)
        for image in images:
            _copy(produced / image, box / image)
        inputs = {*deps, *images}
        outs = {ws.fill(o.path).relative_to(box).as_posix() for o in step.outs}
        report = tmp_path / f"{verb}.json"
        done = subprocess.run([sys.executable, str(SANDBOX), str(box), verb, str(report), *overrides],
                              cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{verb} failed in its sandbox:\n{done.stderr[-4000:]}"
        seen = json.loads(report.read_text(encoding="utf-8"))

        undeclared = [p for p in seen["reads"] if not (_within(p, inputs) or _own(p, outs)
                                                       or _within(p, AMBIENT_FILES))]
        assert not undeclared, f"{verb} read {undeclared}, which it does not declare (deps: {sorted(deps)})"
        folders = {"/".join(parts[:i]) for p in {*inputs, *outs} for parts in [p.split("/")] for i in range(len(parts))}
        sidecars = {f"{p}.json" for p in inputs}  # a model file's metadata beside it (inference.tensorrt), if any
        sought = [p for p in seen["missing"] if not (_within(p, inputs) or _own(p, outs) or p in folders
                                                     or p in sidecars or _within(p, AMBIENT_FILES))]
        assert not sought, f"{verb} looked for {sought}, which it does not declare (deps: {sorted(deps)})"
        left = [p.relative_to(box).as_posix() for p in box.rglob("*") if p.is_file()]
        stray = [p for p in left if not (_within(p, inputs) or _within(p, outs) or _within(p, AMBIENT_FILES))]
        assert not stray, f"{verb} wrote {stray}, which are no declared outputs"
        assert not any(cwd.iterdir()), f"{verb} wrote {sorted(cwd.iterdir())} into the working directory"
        imported = {m for m in seen["modules"] if m.split(".")[0] in OWN_PACKAGES and not is_ambient(m)}
        missed = imported - set(code_files(step))
        assert not missed, f"{verb} imported {sorted(missed)}, which its code fingerprint does not cover"
        sections = set(seen["sections"])
        assert not sections - set(step.params) - set(AMBIENT), f"{verb} reads {sorted(sections)}: {step.params}"
        assert step.params[0] in sections, f"{verb} never reads its own section"

        for out in outs:
            if (box / out).exists():
                _copy(box / out, produced / out)
