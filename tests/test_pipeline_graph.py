"""dvc.yaml is the step graph for both `dvc repro` and the Prefect tasks; it must follow the conventions."""

from __future__ import annotations

import shutil
from pathlib import Path

from detops.config import VERBS, load_params
from detops.pipeline import fingerprint, load_stages, outputs_present
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def repo_ws() -> Workspace:
    return Workspace.at(REPO, load_params(REPO / "params.yaml"))


def test_stage_per_verb_calls_the_cli_with_its_own_params_section_first() -> None:
    stages = load_stages(repo_ws())
    assert set(stages) <= set(VERBS)
    sections = set(repo_ws().params.to_dict())
    for name, stage in stages.items():
        assert stage.cmd == f"detops {name}"
        assert stage.params[0] == name and set(stage.params) <= sections
    assert set(stages["export"].params) == {"export", "evaluate", "predict"}  # it scores as evaluate does


def test_stages_chain_through_the_workspace_files() -> None:
    ws = repo_ws()
    stages = load_stages(ws)
    prepared = ws.relative(ws.prepared)
    assert f"{prepared}/dataset.json" in stages["import"].outs
    assert ws.relative(ws.validated_json) in stages["validate"].outs
    for split in ("train", "val", "test"):
        assert ws.relative(ws.split_json(split)) in stages["split"].outs
    # each stage's first deps are outputs of an earlier stage (or the raw source)
    outs = {out for stage in stages.values() for out in stage.outs}
    assert stages["validate"].deps[0] in outs
    assert stages["train"].deps[0] in outs and stages["evaluate"].deps[0] in outs


def test_param_reference_is_resolved(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(None, ["import.source=/data/mine"]))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    assert load_stages(ws)["import"].deps[0] == "/data/mine"


def test_fingerprint_follows_params_and_dep_content(tmp_path: Path) -> None:
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    ws = Workspace.at(tmp_path, load_params(None))
    dep = tmp_path / "data/prepared/dataset.json"
    dep.parent.mkdir(parents=True)
    dep.write_text("{}")
    stage = load_stages(ws)["validate"]
    first = fingerprint(ws, stage)
    assert fingerprint(ws, stage) == first
    dep.write_text('{"images": []}')
    assert fingerprint(ws, stage) != first
    changed = Workspace.at(tmp_path, load_params(None, ["validate.min_box_area=4"]))
    assert fingerprint(changed, stage) != fingerprint(ws, stage)
    # a change in another section does not invalidate this stage
    other = Workspace.at(tmp_path, load_params(None, ["train.epochs=2"]))
    assert fingerprint(other, stage) == fingerprint(ws, stage)
    assert not outputs_present(ws, stage)
