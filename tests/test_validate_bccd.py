"""Acceptance on the real BCCD dataset: its two zero-area RBC boxes stop `fail` and are all `drop` removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _files import tree_hash

from detops.config import load_params
from detops.dataset.canonical import read_dataset, write_dataset
from detops.errors import ValidationFailed
from detops.steps import import_
from detops.steps import validate as validate_step
from detops.workspace import Workspace

pytestmark = pytest.mark.shared


@pytest.fixture
def bccd_dataset(shared: Path, tmp_path: Path) -> Path:
    """BCCD's canonical json as `detops import` writes it (VOC corners: x = xmin, w = xmax - xmin)."""
    params = load_params(None, ("import.format=voc", f"import.source={shared / 'datasets/bccd/BCCD'}"))
    ws = Workspace.at(tmp_path / "import_ws", params)
    import_.run(ws)
    return ws.dataset_json


def _run(tmp_path: Path, dataset_json: Path, policy: str) -> Workspace:
    params = load_params(None, (f"validate.on_error={policy}", "validate.data_docs=false"))
    ws = Workspace.at(tmp_path / "ws", params)
    write_dataset(ws.dataset_json, read_dataset(dataset_json))
    return ws


def test_fail_stops_on_exactly_the_two_zero_area_boxes(tmp_path: Path, bccd_dataset: Path) -> None:
    ws = _run(tmp_path, bccd_dataset, "fail")

    with pytest.raises(ValidationFailed) as failure:
        validate_step.run(ws)

    report = json.loads((ws.reports / "validation.json").read_text())
    problems = report["problems"]
    assert [p["kind"] for p in problems] == ["annotation", "annotation"]
    for problem, image in zip(problems, ("BloodImage_00338.jpg", "BloodImage_00343.jpg"), strict=True):
        assert image in problem["label"] and problem["label"].endswith(", RBC)")
    message = str(failure.value)
    for problem in problems:
        assert f"{problem['label']}: " in message
    assert "below min_box_area 1.0" in message
    assert report["counts"]["before"] == {"images": 364, "boxes": 4888, "classes": 3}


def test_drop_keeps_364_images_and_4886_boxes_without_touching_the_source(
    tmp_path: Path, bccd_dataset: Path, shared: Path
) -> None:
    root = shared / "datasets/bccd/BCCD"
    before = tree_hash(root)
    ws = _run(tmp_path, bccd_dataset, "drop")

    result = validate_step.run(ws)

    cleaned = read_dataset(ws.validated_json)
    assert (len(cleaned["images"]), len(cleaned["annotations"])) == (364, 4886)
    assert result.metrics["dropped_boxes"] == 2
    report = json.loads((ws.reports / "validation.json").read_text())
    assert all(p["action"] == "dropped" for p in report["problems"]) and len(report["problems"]) == 2
    assert tree_hash(root) == before
