"""`detops export-dataset` and back: COCO -> YOLO/VOC/COCO -> COCO keeps every box, image and class name."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from _import_fixtures import boxes_by_file, coco_with_edge_cases, images_by_file, run_import, tiny_coco
from typer.testing import CliRunner

from detops.cli import app
from detops.config import load_params
from detops.dataset.canonical import Dataset
from detops.errors import DataError
from detops.formats.layout import flat_file_names
from detops.steps import export_dataset
from detops.workspace import Workspace


@pytest.fixture
def imported(workspace: Path) -> Dataset:
    """The sample plus edge-case images, imported into `workspace` as the canonical json."""
    coco_with_edge_cases(workspace / "data/raw/sample")
    _, dataset = run_import(workspace, "coco", "data/raw/sample")
    return dataset


def _export(workspace: Path, fmt: str, out: str) -> Path:
    result = export_dataset.run(Workspace.at(workspace, load_params()), fmt=fmt, out=Path(out))
    assert result.outputs == {"dataset": out}
    return workspace / out


def _assert_same_dataset(before: Dataset, after: Dataset, tolerance: float) -> None:
    """Same images (size, bytes), class names and boxes; ids may differ (VOC numbers sorted names)."""
    assert len(after["images"]) == len(before["images"])
    assert sorted(c["name"] for c in after["categories"]) == sorted(c["name"] for c in before["categories"])
    old_images, new_images = images_by_file(before), images_by_file(after)
    assert new_images.keys() == old_images.keys()  # base names are unique here, so kept
    for name, image in new_images.items():
        assert (image["width"], image["height"], image["sha1"]) == (
            old_images[name]["width"],
            old_images[name]["height"],
            old_images[name]["sha1"],
        ), name
    old_boxes, new_boxes = boxes_by_file(before), boxes_by_file(after)
    for name, boxes in old_boxes.items():
        assert [label for label, _ in new_boxes[name]] == [label for label, _ in boxes], name
        for (_, new), (_, old) in zip(new_boxes[name], boxes, strict=True):
            assert new == pytest.approx(old, abs=tolerance), name


def test_coco_to_yolo_and_back(workspace: Path, imported: Dataset) -> None:
    out = _export(workspace, "yolo", "exports/yolo")

    spec = yaml.safe_load((out / "data.yaml").read_text())
    assert spec["names"] == [c["name"] for c in imported["categories"]]
    assert {k: spec[k] for k in ("train", "val", "test")} == {s: f"{s}/images" for s in ("train", "val", "test")}
    _, again = run_import(workspace, "yolo", "exports/yolo")

    _assert_same_dataset(imported, again, tolerance=1e-3)  # the spec asks for 1 px; 6 decimals give far better
    assert [c["name"] for c in again["categories"]] == [c["name"] for c in imported["categories"]]
    # Images with a source split keep it; the others land in train, YOLO's only home for them.
    old_split = {Path(im["file_name"]).name: im.get("source_split", "train") for im in imported["images"]}
    assert {Path(im["file_name"]).name: im["source_split"] for im in again["images"]} == old_split
    assert again["info"]["root"] == "exports/yolo"


def test_coco_to_voc_and_back_is_exact(workspace: Path, imported: Dataset) -> None:
    out = _export(workspace, "voc", "exports/voc")

    assert {p.suffix for p in (out / "JPEGImages").iterdir()} == {".png", ".jpg"}  # extensions kept
    assert sorted(p.name for p in (out / "ImageSets/Main").iterdir()) == [
        "test.txt",
        "train.txt",
        "trainval.txt",
        "val.txt",
    ]
    _, again = run_import(workspace, "voc", "exports/voc")

    _assert_same_dataset(imported, again, tolerance=1e-6)
    old_split = {Path(im["file_name"]).name: im.get("source_split") for im in imported["images"]}
    assert {Path(im["file_name"]).name: im.get("source_split") for im in again["images"]} == old_split


def test_coco_to_coco_keeps_the_content_hash(workspace: Path, imported: Dataset) -> None:
    _export(workspace, "coco", "exports/coco")
    _, again = run_import(workspace, "coco", "exports/coco")
    assert again["info"]["content_hash"] == imported["info"]["content_hash"]
    assert again["images"] == imported["images"]
    assert again["annotations"] == imported["annotations"]


def test_export_refuses_a_non_empty_folder_and_leaves_it_alone(workspace: Path, imported: Dataset) -> None:
    target = workspace / "exports/taken"
    target.mkdir(parents=True)
    (target / "keep.txt").write_text("mine")
    ws = Workspace.at(workspace, load_params())

    with pytest.raises(DataError, match=r"exports/taken: exists and is not an empty folder"):
        export_dataset.run(ws, fmt="voc", out=Path("exports/taken"))

    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["taken"]  # no temp folder left


def test_export_into_an_empty_folder_makes_a_readable_dataset(workspace: Path, imported: Dataset) -> None:
    (workspace / "exports/empty").mkdir(parents=True)
    out = _export(workspace, "yolo", "exports/empty")
    assert (out / "data.yaml").is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()  # not the temp folder's owner-only mode


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_needs_every_image(workspace: Path) -> None:
    tiny_coco(workspace / "src")
    run_import(workspace, "coco", workspace / "src")
    (workspace / "src/images/one.jpg").unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\) not found under .*src.*one\.jpg"):
        export_dataset.run(Workspace.at(workspace, load_params()), fmt="yolo", out=Path("out"))
    assert not (workspace / "out").exists()


def test_crowd_regions_are_left_out_of_yolo_and_voc_with_a_note(workspace: Path) -> None:
    ann = tiny_coco(workspace / "src")
    data = json.loads(ann.read_text())
    data["annotations"][0]["iscrowd"] = 1
    ann.write_text(json.dumps(data))
    run_import(workspace, "coco", workspace / "src")
    ws = Workspace.at(workspace, load_params())
    for fmt in ("yolo", "voc"):
        result = export_dataset.run(ws, fmt=fmt, out=Path(f"out_{fmt}"))
        assert result.notes == [f"1 crowd region(s) left out: {fmt.upper()} has no crowd boxes."]
        _, again = run_import(workspace / fmt, fmt, workspace / f"out_{fmt}")
        assert len(again["annotations"]) == 2


def test_clashing_base_names_get_the_image_id() -> None:
    images = [
        {"id": 1, "file_name": "a/x.png"},
        {"id": 2, "file_name": "b/x.jpg"},
        {"id": 3, "file_name": "c/X.png"},
        {"id": 4, "file_name": "y.jpg"},
    ]
    assert flat_file_names(images) == {1: "x_1.png", 2: "x_2.jpg", 3: "X_3.png", 4: "y.jpg"}


def test_cli_export_dataset(
    workspace: Path, imported: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--out is relative to where the command was typed, not to --workspace."""
    shell = tmp_path / "shell"
    shell.mkdir()
    monkeypatch.chdir(shell)
    args = ["--workspace", str(workspace), "export-dataset", "--format", "voc", "--out", "exports/cli"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert len(list((shell / "exports/cli/Annotations").iterdir())) == len(imported["images"])
    assert not (workspace / "exports").exists()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == DataError.exit_code
    assert "error: " in second.output and "Traceback" not in second.output
