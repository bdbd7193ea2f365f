"""The data quality gate: each kind of bad input is named, `fail` stops, `drop` cleans, sources stay untouched."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _files import tree_hash
from PIL import Image
from typer.testing import CliRunner

from detops.cli import app
from detops.config import load_params
from detops.config.validate import ValidateParams
from detops.dataset.canonical import Dataset, read_dataset, write_dataset
from detops.errors import ValidationFailed
from detops.steps import validate as validate_step
from detops.validation.gate import validate_dataset
from detops.validation.integrity import check_images, trusted_integrity
from detops.workspace import Workspace

W, H = 64, 48


def _small_dataset(root: Path) -> Dataset:
    """Four real 64x48 JPEGs, two classes, every box valid."""
    root.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(4):
        Image.new("RGB", (W, H), (40 * i, 90, 160)).save(root / f"img{i}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"img{i}.jpg", "width": W, "height": H, "sha1": ""})
        for k in range(2):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1 + (i + k) % 2,
                    "bbox": [4.0 + 20 * k, 6.0, 16.0, 20.0],
                    "area": 320.0,
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"root": str(root)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog", "supercategory": ""}],
    }


def _workspace(tmp_path: Path, dataset: Dataset, *overrides: str) -> Workspace:
    params = load_params(None, ("validate.workers=1", "validate.data_docs=false", *overrides))
    ws = Workspace.at(tmp_path / "ws", params)
    write_dataset(ws.dataset_json, dataset)
    return ws


# Each bad input, how to make it, and the words the failure must contain (file or annotation named).
def _truncate(ds: Dataset, root: Path) -> None:
    data = (root / "img1.jpg").read_bytes()
    (root / "img1.jpg").write_bytes(data[: len(data) // 2])


def _zero_bytes(ds: Dataset, root: Path) -> None:
    (root / "img2.jpg").write_bytes(b"")


def _png_as_jpg(ds: Dataset, root: Path) -> None:
    Image.new("RGB", (W, H), "red").save(root / "img3.jpg", format="PNG")


def _negative_width(ds: Dataset, root: Path) -> None:
    ds["annotations"][2]["bbox"][2] = -5.0


def _nan_coordinate(ds: Dataset, root: Path) -> None:
    ds["annotations"][4]["bbox"][0] = float("nan")


def _unknown_category(ds: Dataset, root: Path) -> None:
    ds["annotations"][5]["category_id"] = 99


def _duplicate_annotation_id(ds: Dataset, root: Path) -> None:
    ds["annotations"][7]["id"] = 3


BAD_INPUTS: dict[str, tuple[Callable[[Dataset, Path], None], list[str]]] = {
    "truncated_jpeg": (_truncate, ["image 2 (img1.jpg)", "truncated file"]),
    "zero_byte_file": (_zero_bytes, ["image 3 (img2.jpg)", "empty file (0 bytes)"]),
    "png_renamed_jpg": (_png_as_jpg, ["image 4 (img3.jpg)", "holds PNG data but its extension promises JPEG"]),
    "negative_width": (_negative_width, ["annotation 3 (img1.jpg, dog)", "width -5.0 is not positive"]),
    "nan_coordinate": (_nan_coordinate, ["annotation 5 (img2.jpg, cat)", "bbox x is missing or NaN"]),
    "unknown_category": (_unknown_category, ["annotation 6 (img2.jpg, category 99)", "category_id 99 is not in"]),
    "duplicate_annotation_id": (
        _duplicate_annotation_id,
        ["annotation 3 (img1.jpg, dog)", "annotation 3 (img3.jpg, cat)", "annotation id 3 is used by more than one"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_each_bad_input_fails_naming_the_file_or_annotation(tmp_path: Path, case: str) -> None:
    make_bad, expected = BAD_INPUTS[case]
    root = tmp_path / "raw"
    dataset = _small_dataset(root)
    make_bad(dataset, root)
    ws = _workspace(tmp_path, dataset)

    with pytest.raises(ValidationFailed) as failure:
        validate_step.run(ws)

    message = str(failure.value)
    for words in expected:
        assert words in message
    assert "reports/validation.json" in message
    report = json.loads((ws.reports / "validation.json").read_text())
    assert report["success"] is False
    assert not ws.validated_json.exists()
    # Exactly the sabotaged item is reported, nothing else.
    reported = {(p["kind"], p["id"]) for p in report["problems"]}
    assert len(reported) == 1


def test_clean_dataset_passes_unchanged_with_data_docs(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "raw")
    ws = _workspace(tmp_path, dataset, "validate.data_docs=true")

    result = validate_step.run(ws)

    assert read_dataset(ws.validated_json) == read_dataset(ws.dataset_json)
    report = json.loads((ws.reports / "validation.json").read_text())
    assert report["success"] is True and report["problems"] == []
    assert report["counts"]["before"] == report["counts"]["after"] == {"images": 4, "boxes": 8, "classes": 2}
    assert all(e["success"] for e in report["expectations"])
    assert report["content_hash"]["input"] == report["content_hash"]["output"]
    docs = ws.root / report["data_docs"]
    assert docs.name == "index.html" and docs.is_file()
    pages = [p for p in docs.parent.rglob("*.html") if p != docs]
    assert any("annotations" in p.read_text() for p in pages)  # the suites' results are rendered
    assert result.metrics["passed"] is True and result.metrics["boxes"] == 8


def test_drop_mode_writes_a_cleaned_dataset_and_lists_every_dropped_item(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    dataset = _small_dataset(root)
    _zero_bytes(dataset, root)  # image 3 and its 2 boxes go
    _negative_width(dataset, root)  # annotation 3 goes
    _unknown_category(dataset, root)  # annotation 6 (on image 3) goes with its image anyway
    ws = _workspace(tmp_path, dataset, "validate.on_error=drop")
    before = tree_hash(root, ws.dataset_json)

    result = validate_step.run(ws)

    assert tree_hash(root, ws.dataset_json) == before  # the source data is never modified
    cleaned = read_dataset(ws.validated_json)
    assert [im["id"] for im in cleaned["images"]] == [1, 2, 4]
    assert sorted(a["id"] for a in cleaned["annotations"]) == [1, 2, 4, 7, 8]
    report = json.loads((ws.reports / "validation.json").read_text())
    dropped = {(p["kind"], p["id"]): p for p in report["problems"]}
    assert set(dropped) == {("image", 3), ("annotation", 3), ("annotation", 6)}
    assert all(p["action"] == "dropped" and p["reasons"] for p in dropped.values())
    assert dropped[("image", 3)]["boxes"] == 2
    assert report["counts"]["dropped"] == {"images": 1, "boxes": 3, "classes": 0}
    assert report["content_hash"]["input"] != report["content_hash"]["output"]
    assert result.metrics["dropped_boxes"] == 3

    # The cleaned dataset passes the gate as it is.
    again = validate_dataset(cleaned, check_images(cleaned, root, workers=1), ws.params.validate_)
    assert again.success and again.counts["before"] == again.counts["after"]


def test_fail_mode_removes_a_stale_pass(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    dataset = _small_dataset(root)
    ws = _workspace(tmp_path, dataset)
    validate_step.run(ws)
    assert ws.validated_json.is_file()
    _negative_width(dataset, root)
    write_dataset(ws.dataset_json, dataset)

    with pytest.raises(ValidationFailed):
        validate_step.run(ws)
    assert not ws.validated_json.exists()


def test_parallel_integrity_check_matches_the_serial_one(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    dataset = _small_dataset(root)
    _truncate(dataset, root)
    _png_as_jpg(dataset, root)
    dataset["images"].append({"id": 9, "file_name": "missing.jpg", "width": W, "height": H})
    dataset["images"].append({"id": 10, "file_name": "../outside.jpg", "width": W, "height": H})

    serial = check_images(dataset, root, workers=1)
    parallel = check_images(dataset, root, workers=2)

    assert serial.equals(parallel)
    assert serial["readable"].tolist() == [True, False, True, True, False, False]
    assert serial.loc[3, "file_format"] == "PNG"
    assert serial.loc[4, "problem"] == "file not found"
    assert "escapes the dataset root" in serial.loc[5, "problem"]


def _outcome(dataset: Dataset, **params: Any) -> Any:
    return validate_dataset(dataset, trusted_integrity(dataset), ValidateParams(**params))


def test_box_edges_respect_the_tolerance(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "raw")
    dataset["annotations"][0]["bbox"] = [-0.5, 0.0, W + 1.0, 10.0]  # pokes 0.5 px out on the left and the right

    assert _outcome(dataset, bbox_tolerance_px=1.0).success
    strict = _outcome(dataset, bbox_tolerance_px=0.0)
    assert [p.id for p in strict.problems] == [1]
    assert strict.problems[0].reasons == [
        "x -0.5 is left of the image (tolerance 0.0 px)",
        "right edge x+w 64.5 is past the image width 64.0 (tolerance 0.0 px)",
    ]


def test_right_and_bottom_overflow_name_the_image_size(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "raw")
    dataset["annotations"][0]["bbox"] = [50.0, 40.0, 20.0, 10.0]  # ends at 70 x 50 in a 64 x 48 image

    outcome = _outcome(dataset)

    reasons = outcome.problems[0].reasons
    assert "right edge x+w 70.0 is past the image width 64.0 (tolerance 1.0 px)" in reasons
    assert "bottom edge y+h 50.0 is past the image height 48.0 (tolerance 1.0 px)" in reasons


def test_count_rules_use_their_params(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "raw")
    dataset["categories"].append({"id": 3, "name": "bird", "supercategory": ""})
    dataset["annotations"].append(
        {"id": 100, "image_id": 1, "category_id": 3, "bbox": [1.0, 1.0, 5.0, 5.0], "area": 25.0, "iscrowd": 0}
    )

    assert _outcome(dataset).success
    outcome = _outcome(dataset, min_instances_per_class=2, max_boxes_per_image=2, on_error="drop")

    messages = [p.message() for p in outcome.problems]
    assert messages == [
        "image 1 (img0.jpg): 3 boxes, above max_boxes_per_image 2",
        "class bird (id 3): 0 boxes, below min_instances_per_class 2",
    ]
    assert [c["name"] for c in outcome.dataset["categories"]] == ["cat", "dog"]
    assert outcome.counts["after"] == {"images": 3, "boxes": 6, "classes": 2}


def test_missing_image_and_size_mismatch_are_caught(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    dataset = _small_dataset(root)
    dataset["annotations"][0]["image_id"] = 42
    dataset["images"][1]["width"] = 100  # the file is 64 px wide

    outcome = validate_dataset(dataset, check_images(dataset, root, workers=1), ValidateParams())

    messages = [p.message() for p in outcome.problems]
    assert "image 2 (img1.jpg): json width 100.0 but the file's width is 64.0" in messages
    assert "annotation 1 (image 42, cat): image_id 42 is not in images" in messages


def test_cli_failure_is_an_error_line_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    dataset = _small_dataset(root)
    _negative_width(dataset, root)
    ws = _workspace(tmp_path, dataset)

    result = CliRunner().invoke(app, ["--workspace", str(ws.root), "--set", "validate.workers=1", "validate"])

    assert result.exit_code == ValidationFailed.exit_code != 0
    assert "error: validation failed" in result.output
    assert "annotation 3 (img1.jpg, dog): width -5.0 is not positive" in result.output
    assert "Traceback" not in result.output


def test_in_memory_gate_reports_gx_timings_and_sample_ids(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "raw")
    bad = copy.deepcopy(dataset)
    for ann in bad["annotations"][:3]:
        ann["bbox"][2] = 0.0

    outcome = _outcome(bad)

    area = next(r for r in outcome.rules if r.rule == "box_area_min")
    assert not area.success and area.unexpected_count == 3 and area.sample_ids == [1, 2, 3]
    assert {"tables_s", "gx_setup_s", "gx_validate_s"} <= set(outcome.timings)
    assert outcome.dataset is bad  # fail mode hands back the input untouched


def test_integrity_uses_the_displayed_size_and_catches_a_png_without_its_end(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 48 x 64
    Image.new("RGB", (W, H), "blue").save(root / "rotated.jpg", exif=exif)
    Image.new("RGB", (W, H), "green").save(root / "cut.png")
    (root / "cut.png").write_bytes((root / "cut.png").read_bytes()[:-12])
    dataset: Dataset = {
        "images": [
            {"id": 1, "file_name": "rotated.jpg", "width": H, "height": W},
            {"id": 2, "file_name": "cut.png", "width": W, "height": H},
        ],
        "annotations": [],
        "categories": [],
    }

    outcome = validate_dataset(dataset, check_images(dataset, root, workers=1), ValidateParams())

    assert [p.message() for p in outcome.problems] == [
        "image 2 (cut.png): truncated file (PNG): PNG file is truncated (no IEND chunk)"
    ]


def test_drop_removes_a_rare_class_with_its_boxes(tmp_path: Path) -> None:
    dataset = _small_dataset(tmp_path / "raw")
    dataset["annotations"][0]["category_id"] = 2  # cat keeps 3 boxes, dog has 5

    outcome = _outcome(dataset, min_instances_per_class=4, on_error="drop")

    assert [p.message() for p in outcome.problems] == ["class cat (id 1): 3 boxes, below min_instances_per_class 4"]
    assert outcome.problems[0].boxes == 3
    assert {a["category_id"] for a in outcome.dataset["annotations"]} == {2}
    assert outcome.counts["after"] == {"images": 4, "boxes": 5, "classes": 1}
