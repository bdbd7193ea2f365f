"""`detops import`: COCO, YOLO and Pascal VOC into the canonical COCO json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _import_fixtures import (
    ROTATED_STORED,
    coco_with_edge_cases,
    draw,
    run_import,
    tiny_coco,
    tiny_voc,
    tiny_yolo,
    voc_xml,
)
from PIL import Image

from detops import __version__
from detops.dataset.canonical import annotation_hash
from detops.dataset.images import probe_image
from detops.errors import DataError
from detops.formats.yolo import label_path_for


def test_coco_import_keeps_ids_and_takes_size_and_hash_from_the_files(workspace: Path) -> None:
    root = workspace / "data/raw/edge"
    ann_path = coco_with_edge_cases(root)
    given = json.loads(ann_path.read_text(encoding="utf-8"))

    result, dataset = run_import(workspace, "coco", "data/raw/edge")

    info = dataset["info"]
    assert info == {
        "root": "data/raw/edge",
        "source_format": "coco",
        "content_hash": annotation_hash(dataset),
        "detops_version": __version__,
    }
    assert [im["id"] for im in dataset["images"]] == [im["id"] for im in given["images"]]
    assert [a["id"] for a in dataset["annotations"]] == [a["id"] for a in given["annotations"]]
    assert dataset["categories"] == given["categories"]
    for image in dataset["images"]:
        data = (root / image["file_name"]).read_bytes()
        assert image["sha1"] == hashlib.sha1(data).hexdigest()
        with Image.open(root / image["file_name"]) as img:
            stored = img.size
        expected = stored[::-1] if image["file_name"].endswith("rotated.jpg") else stored
        assert (image["width"], image["height"]) == expected
    by_id = {a["id"]: a for a in dataset["annotations"]}
    for ann in given["annotations"]:
        assert by_id[ann["id"]]["bbox"] == ann["bbox"]
        assert by_id[ann["id"]]["category_id"] == ann["category_id"]
    assert result.metrics["images"] == len(given["images"])
    assert result.metrics["boxes"] == len(given["annotations"])
    assert result.outputs == {"dataset": "data/prepared/dataset.json"}
    assert not result.notes  # declared sizes match the files, EXIF rotation included


def test_file_names_with_spaces_and_non_ascii_survive(workspace: Path) -> None:
    coco_with_edge_cases(workspace / "src", num_images=2)
    _, dataset = run_import(workspace, "coco", workspace / "src")
    assert "images/a b ü.jpg" in {im["file_name"] for im in dataset["images"]}
    raw = (workspace / "data/prepared/dataset.json").read_text(encoding="utf-8")
    assert "a b ü.jpg" in raw


def test_root_outside_the_workspace_is_recorded_absolute(workspace: Path, tmp_path: Path) -> None:
    tiny_coco(tmp_path / "elsewhere")
    _, dataset = run_import(workspace, "coco", tmp_path / "elsewhere")
    assert dataset["info"]["root"] == str((tmp_path / "elsewhere").resolve())


def test_probe_reads_grayscale_rgba_16bit_and_exif_rotation(tmp_path: Path) -> None:
    modes = {
        "L": draw(tmp_path / "g.png", (20, 10), "L"),
        "RGBA": draw(tmp_path / "a.png", (20, 10), "RGBA"),
        "I;16": draw(tmp_path / "d.png", (20, 10), "I;16"),
    }
    for mode, path in modes.items():
        info = probe_image(path)
        assert (info.mode, info.width, info.height) == (mode, 20, 10)
    rotated = probe_image(draw(tmp_path / "r.jpg", ROTATED_STORED, orientation=6))
    assert (rotated.width, rotated.height, rotated.orientation) == (ROTATED_STORED[1], ROTATED_STORED[0], 6)
    upright = probe_image(draw(tmp_path / "u.jpg", ROTATED_STORED, orientation=3))  # 180 degrees: no swap
    assert (upright.width, upright.height) == ROTATED_STORED


def test_size_mismatch_warns_by_default_and_the_file_wins(workspace: Path) -> None:
    root = workspace / "src"
    ann = tiny_coco(root)
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 99
    ann.write_text(json.dumps(data))

    result, dataset = run_import(workspace, "coco", root)

    assert dataset["images"][0]["width"] == 40
    assert len(result.notes) == 1
    assert "images/one.jpg: 99x30" in result.notes[0] and "40x30 in the file" in result.notes[0]


def test_size_mismatch_error_policy_refuses_and_keeps_the_previous_output(workspace: Path) -> None:
    root = workspace / "src"
    ann = tiny_coco(root)
    run_import(workspace, "coco", root)
    previous = (workspace / "data/prepared/dataset.json").read_bytes()
    data = json.loads(ann.read_text())
    data["images"][1]["height"] = 5
    ann.write_text(json.dumps(data))

    with pytest.raises(DataError, match=r"images/two\.png: 32x5 in .*annotations\.json images\[1\] \(id 20\)"):
        run_import(workspace, "coco", root, "import.size_mismatch=error")
    assert (workspace / "data/prepared/dataset.json").read_bytes() == previous


def test_thread_count_does_not_change_the_result(workspace: Path) -> None:
    coco_with_edge_cases(workspace / "src", num_images=6)
    _, one = run_import(workspace, "coco", workspace / "src", "import.workers=1")
    _, four = run_import(workspace, "coco", workspace / "src", "import.workers=4")
    assert one == four


def test_coco_annotations_option_and_json_beside_the_images(workspace: Path) -> None:
    root = workspace / "src"
    tiny_coco(root)
    # A second json makes the default ambiguous; the file name in the json is relative to the json's folder.
    (root / "images/labels.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "one.jpg"}],
                "annotations": [],
                "categories": [{"id": 1, "name": "x"}],
            }
        )
    )
    _, dataset = run_import(workspace, "coco", root, "import.annotations=images/labels.json")
    assert [im["file_name"] for im in dataset["images"]] == ["images/one.jpg"]
    (root / "extra.json").write_text("{}")
    (root / "annotations.json").rename(root / "other.json")
    with pytest.raises(DataError, match="Pass --annotations"):
        run_import(workspace, "coco", root)


def test_yolo_data_yaml_layout(workspace: Path) -> None:
    root = workspace / "src"
    tiny_yolo(root)
    (root / "train/labels/b.txt").unlink()  # an image without a label file has no boxes

    result, dataset = run_import(workspace, "yolo", root)

    assert dataset["categories"] == [
        {"id": 1, "name": "red", "supercategory": ""},
        {"id": 2, "name": "blue", "supercategory": ""},
    ]
    images = {im["file_name"]: im for im in dataset["images"]}
    assert {name: im.get("source_split") for name, im in images.items()} == {
        "train/images/a.jpg": "train",
        "train/images/b.png": "train",
        "valid/images/c.jpg": "val",
    }
    a = images["train/images/a.jpg"]
    boxes = [(ann["category_id"], ann["bbox"]) for ann in dataset["annotations"] if ann["image_id"] == a["id"]]
    # a.jpg is 40x20: (0.5, 0.5, 0.5, 0.5) -> x = (0.5 - 0.25) * 40 ...
    assert boxes == [(1, [10.0, 5.0, 20.0, 10.0]), (2, [8.0, 3.0, 4.0, 4.0])]
    assert len(dataset["annotations"]) == 2
    assert any("1 image(s) have no label file" in note for note in result.notes)


def test_yolo_names_as_list_path_key_and_polygon_lines(workspace: Path) -> None:
    root = workspace / "src"
    draw(root / "ds/images/train/x.jpg", (100, 50))
    (root / "ds/labels/train").mkdir(parents=True)
    (root / "ds/labels/train/x.txt").write_text("2 0.1 0.2 0.5 0.2 0.3 0.8\n", encoding="utf-8")
    (root / "data.yaml").write_text("path: ds\ntrain: images/train\nnames: [a, b, c]\n", encoding="utf-8")

    _, dataset = run_import(workspace, "yolo", root)

    assert [c["name"] for c in dataset["categories"]] == ["a", "b", "c"]
    assert dataset["images"][0]["file_name"] == "ds/images/train/x.jpg"
    ann = dataset["annotations"][0]
    assert ann["category_id"] == 3
    assert ann["bbox"] == pytest.approx([10.0, 10.0, 40.0, 30.0])


def test_yolo_boxes_refer_to_the_displayed_exif_rotated_image(workspace: Path) -> None:
    root = workspace / "src"
    draw(root / "images/r.jpg", ROTATED_STORED, orientation=6)  # shown 40 wide, 60 high
    (root / "labels").mkdir()
    (root / "labels/r.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "classes.txt").write_text("thing\n")

    _, dataset = run_import(workspace, "yolo", root)

    image = dataset["images"][0]
    assert (image["width"], image["height"]) == (40, 60)
    assert dataset["annotations"][0]["bbox"] == [10.0, 15.0, 20.0, 30.0]


def test_yolo_plain_layout_with_classes_txt_reads_splits_from_folders(workspace: Path) -> None:
    root = workspace / "src"
    for split in ("train", "valid", "test"):
        draw(root / f"images/{split}/{split}1.jpg", (20, 20))
        (root / f"labels/{split}").mkdir(parents=True)
        (root / f"labels/{split}/{split}1.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    draw(root / "images/loose.png", (10, 10))
    (root / "classes.txt").write_text("zero\none\n\n")

    _, dataset = run_import(workspace, "yolo", root)

    splits = {im["file_name"]: im.get("source_split") for im in dataset["images"]}
    assert splits == {
        "images/loose.png": None,
        "images/test/test1.jpg": "test",
        "images/train/train1.jpg": "train",
        "images/valid/valid1.jpg": "val",
    }
    assert [c["name"] for c in dataset["categories"]] == ["zero", "one"]
    assert {a["category_id"] for a in dataset["annotations"]} == {2}


def test_label_path_replaces_the_last_images_folder() -> None:
    assert label_path_for("images/train/images/x.y.jpg") == "images/train/labels/x.y.txt"
    assert label_path_for("train/images/a b.png") == "train/labels/a b.txt"
    assert label_path_for("flat/x.jpg") == "flat/x.txt"
    assert label_path_for("x.jpg") == "x.txt"


def test_voc_reads_edges_sorted_names_and_image_sets(workspace: Path) -> None:
    root = tiny_voc(workspace / "src")

    _, dataset = run_import(workspace, "voc", root)

    assert dataset["categories"] == [
        {"id": 1, "name": "ant", "supercategory": ""},
        {"id": 2, "name": "zebra", "supercategory": ""},
    ]
    images = {im["file_name"]: im for im in dataset["images"]}
    assert {k: v["source_split"] for k, v in images.items()} == {
        "JPEGImages/p1.jpg": "train",
        "JPEGImages/p2.jpg": "val",
    }
    p1 = images["JPEGImages/p1.jpg"]["id"]
    assert sorted((a["category_id"], a["bbox"]) for a in dataset["annotations"] if a["image_id"] == p1) == [
        (1, [5.0, 5.0, 0.0, 4.0]),  # a zero-width box is imported; the validate step judges it
        (2, [1.0, 2.0, 10.0, 10.0]),
    ]


def test_voc_trainval_only_and_image_found_by_xml_name(workspace: Path) -> None:
    root = workspace / "src"
    draw(root / "JPEGImages/q.png", (20, 20))
    (root / "Annotations").mkdir(parents=True)
    # The xml names a .jpg that does not exist, without a size: the image named like the xml is used.
    (root / "Annotations/q.xml").write_text(voc_xml("q.jpg", None, [("x", (1, 1, 5, 5))]))
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/trainval.txt").write_text("q\nmissing\n")

    result, dataset = run_import(workspace, "voc", root)

    assert dataset["images"][0]["file_name"] == "JPEGImages/q.png"
    assert dataset["images"][0]["source_split"] == "train"
    assert any("1 id(s) in ImageSets/Main have no annotation file: missing" in n for n in result.notes)


def test_yolo_split_folder_left_out_of_data_yaml_is_named_with_the_fix(tmp_path: Path) -> None:
    """Ultralytics reads only the splits data.yaml names; a present `test/` it leaves out is said, with the line
    to add, instead of silently missing from the dataset."""
    from PIL import Image

    from detops.formats.yolo import read_yolo

    for split in ("train", "valid", "test"):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / split / "images" / f"{split}.jpg")
        (tmp_path / split / "labels" / f"{split}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("train: train/images\nval: valid/images\nnames: [a]\n")
    source = read_yolo(tmp_path, tmp_path / "data.yaml")
    assert sorted(im.source_split or "" for im in source.images) == ["train", "val"]
    warning = [n for n in source.notes if "test" in n and "warning" in n]
    assert len(warning) == 1 and "add `test: test/images`" in warning[0]
    (tmp_path / "data.yaml").write_text("train: train/images\nval: valid/images\ntest: test/images\nnames: [a]\n")
    assert not [n for n in read_yolo(tmp_path, tmp_path / "data.yaml").notes if "warning" in n]
