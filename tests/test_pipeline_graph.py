"""The step graph is declared once (detops.steps.graph): dvc.yaml is generated from it, the Prefect cache
key and the flow read it, and a contract test checks that each step reads only the params it declares."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from detops.codegraph import OWN_PACKAGES, is_ambient
from detops.config import VERBS, load_params
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


def repo_ws() -> Workspace:
    return Workspace.at(REPO, load_params(REPO / "params.yaml"))


def test_committed_dvc_yaml_is_generated_from_the_declaration() -> None:
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == dvc_yaml(REPO)


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
    assert set(stages) == set(staged) and set(STEPS) <= set(VERBS)
    assert [v for v in staged if v != "sample"] == list(RETRAIN)  # the flow's order is the graph's
    assert set(STEPS) - set(staged) == {"monitor"}  # checks deliveries outside the pipeline: no stage
    from detops.cli import app

    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
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


def test_outside_the_repository_code_deps_are_fingerprint_files(tmp_path: Path) -> None:
    text = dvc_yaml(tmp_path)
    assert "detops code-fingerprint" in text and ".detops/code/train.sha256" in text and "src/detops" not in text
    inside = dvc_yaml(REPO)
    assert "src/detops/model" in inside and "code-fingerprint" not in inside


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


class ParamsSpy:
    """Wraps Params and records which sections a step reads by attribute. Whole-params dumps (`to_dict`,
    `flat`) are provenance (logged, hashed), not inputs, and are not counted."""

    def __init__(self, params: Any, reads: set[str]) -> None:
        self._params, self._reads = params, reads
        self._alias = {name: (info.alias or name) for name, info in type(params).model_fields.items()}

    def __getattr__(self, name: str) -> Any:
        if name in self._alias:
            self._reads.add(self._alias[name])
        return getattr(self._params, name)

    def __eq__(self, other: object) -> bool:
        return self._params == (other._params if isinstance(other, ParamsSpy) else other)

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.slow
def test_contract_each_step_reads_only_the_params_it_declares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs every step of the graph on a tiny sample and records the params sections each one touches, and the
    modules of ours each one imports."""
    import importlib

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from test_flow_retrain import TINY

    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    params = load_params(root / "params.yaml", [*TINY, "export.latency_runs=3", "export.warmup_runs=0",
                                                "export.calibration_images=4"])
    for verb in STEPS:
        reads: set[str] = set()
        ws = Workspace(root, ParamsSpy(params, reads))  # type: ignore[arg-type]
        loaded = set(sys.modules)
        importlib.import_module(STEPS[verb].module).run(ws)
        # every module of ours that running the step imported (lazily too) is in the step's code fingerprint
        imported = {m for m in set(sys.modules) - loaded if m.split(".")[0] in OWN_PACKAGES and not is_ambient(m)}
        missed = imported - set(code_files(STEPS[verb]))
        assert not missed, f"{verb} imported {sorted(missed)}, which its code fingerprint does not cover"
        undeclared = reads - set(STEPS[verb].params) - set(AMBIENT)
        assert not undeclared, f"{verb} reads {sorted(undeclared)} but declares {STEPS[verb].params}"
        assert STEPS[verb].params[0] in reads, f"{verb} never reads its own section"
