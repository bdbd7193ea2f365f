"""Acceptance on the real datasets in ../shared: BCCD (Pascal VOC) and chess pieces (YOLO, data.yaml)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml
from _files import tree_hash
from _import_fixtures import boxes_by_file, run_import

from detops.config import load_params
from detops.steps import export_dataset
from detops.workspace import Workspace

pytestmark = pytest.mark.shared


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_bccd_voc(workspace: Path, shared: Path) -> None:
    root = shared / "datasets/bccd/BCCD"
    before = tree_hash(root)

    result, dataset = run_import(workspace, "voc", root)

    assert (len(dataset["images"]), len(dataset["annotations"]), len(dataset["categories"])) == (364, 4888, 3)
    assert [c["name"] for c in dataset["categories"]] == ["Platelets", "RBC", "WBC"]
    splits = Counter(im.get("source_split") for im in dataset["images"])
    sets = root / "ImageSets/Main"
    assert splits == {s: _lines(sets / f"{s}.txt") for s in ("train", "val", "test")}
    assert {(im["width"], im["height"]) for im in dataset["images"]} == {(640, 480)}
    # The two point annotations are imported as the zero-area boxes they are; validate judges them.
    names = {im["id"]: im["file_name"] for im in dataset["images"]}
    flat = [names[a["image_id"]] for a in dataset["annotations"] if a["area"] == 0]
    assert flat == ["JPEGImages/BloodImage_00338.jpg", "JPEGImages/BloodImage_00343.jpg"]
    assert result.notes == []
    assert tree_hash(root) == before


def test_chess_pieces_yolo(workspace: Path, shared: Path) -> None:
    root = shared / "datasets/chess_pieces"

    _, dataset = run_import(workspace, "yolo", root)

    assert (len(dataset["images"]), len(dataset["annotations"]), len(dataset["categories"])) == (693, 7086, 13)
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    assert [c["name"] for c in dataset["categories"]] == names
    splits = Counter(im.get("source_split") for im in dataset["images"])
    folders = {"train": "train", "val": "valid", "test": "test"}
    assert splits == {s: len(list((root / f / "images").iterdir())) for s, f in folders.items()}
    per_class = Counter(a["category_id"] for a in dataset["annotations"])
    assert per_class[1] == 3  # `bishop`, class 0, is nearly empty
    with_boxes = {a["image_id"] for a in dataset["annotations"]}
    assert [im["file_name"].split("/")[0] for im in dataset["images"] if im["id"] not in with_boxes] == ["test"]
    assert all(
        im["file_name"].startswith(("train/images/", "valid/images/", "test/images/")) for im in dataset["images"]
    )


def test_bccd_voc_export_and_reimport_is_identical(workspace: Path, shared: Path) -> None:
    _, original = run_import(workspace, "voc", shared / "datasets/bccd/BCCD")
    export_dataset.run(Workspace.at(workspace, load_params()), fmt="voc", out=Path("bccd_again"))

    _, again = run_import(workspace, "voc", "bccd_again")

    assert again["info"]["content_hash"] == original["info"]["content_hash"]
    assert [im.get("source_split") for im in again["images"]] == [im.get("source_split") for im in original["images"]]


def test_chess_pieces_yolo_export_and_reimport(workspace: Path, shared: Path) -> None:
    _, original = run_import(workspace, "yolo", shared / "datasets/chess_pieces")
    export_dataset.run(Workspace.at(workspace, load_params()), fmt="yolo", out=Path("chess_again"))

    _, again = run_import(workspace, "yolo", "chess_again")

    assert [c["name"] for c in again["categories"]] == [c["name"] for c in original["categories"]]
    assert Counter(im["source_split"] for im in again["images"]) == Counter(
        im["source_split"] for im in original["images"]
    )
    old, new = boxes_by_file(original), boxes_by_file(again)
    assert new.keys() == old.keys()
    for name, boxes in old.items():
        assert [label for label, _ in new[name]] == [label for label, _ in boxes]
        for (_, b), (_, a) in zip(new[name], boxes, strict=True):
            assert b == pytest.approx(a, abs=1e-3)
