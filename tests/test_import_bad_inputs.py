"""Bad inputs: one clear DataError naming the file (and line or object); previous output and source untouched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _files import tree_hash
from _import_fixtures import BUILDERS, run_import
from typer.testing import CliRunner

from detops.cli import app
from detops.errors import DataError


def _edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _append_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


# (format, how to break the tiny dataset of that format, what the error must say)
CASES: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "missing image": (
        "coco",
        lambda root: (root / "images/two.png").unlink(),
        r"images/two\.png: image file not found\. \(declared in .*annotations\.json images\[1\] \(id 20\)\)",
    ),
    "truncated jpeg": (
        "coco",
        lambda root: _truncate(root / "images/one.jpg"),
        r"images/one\.jpg: unreadable or truncated",
    ),
    "truncated png": (
        "coco",
        lambda root: _truncate(root / "images/two.png"),
        r"images/two\.png: unreadable or truncated",
    ),
    "zero-byte image": (
        "coco",
        lambda root: (root / "images/two.png").write_bytes(b""),
        r"two\.png: image file is empty",
    ),
    "not an image": ("coco", lambda root: (root / "images/one.jpg").write_text("hello"), r"one\.jpg: not an image"),
    "json syntax": (
        "coco",
        lambda root: (root / "annotations.json").write_text('{"images": [\n  {"id": 1,,}\n]}'),
        r"annotations\.json: not valid JSON: .* at line 2, column",
    ),
    "not instances json": (
        "coco",
        lambda root: (root / "annotations.json").write_text('{"images": []}'),
        r"annotations\.json: missing the COCO list 'annotations'",
    ),
    "escaping file name": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["images"][0].update(file_name="../x.jpg")),
        r"annotations\.json images\[0\] \(id 10\): file name '\.\./x\.jpg' escapes the dataset root",
    ),
    "absolute file name": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["images"][1].update(file_name="/etc/passwd")),
        r"annotations\.json images\[1\] \(id 20\): file name '/etc/passwd' is absolute",
    ),
    "duplicate image id": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["images"][1].update(id=10)),
        r"annotations\.json images\[1\] \(id 10\): duplicate image id 10 \(also images\[0\]\)",
    ),
    "duplicate annotation id": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["annotations"][2].update(id=1)),
        r"annotations\.json annotations\[2\] \(id 1\): duplicate annotation id 1",
    ),
    "unknown image id": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["annotations"][1].update(image_id=99)),
        r"annotations\.json annotations\[1\] \(id 2\): image_id 99 is not in images",
    ),
    "unknown category id": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["annotations"][0].update(category_id=4)),
        r"annotations\.json annotations\[0\] \(id 1\): category_id 4 is not in categories",
    ),
    "malformed bbox": (
        "coco",
        lambda root: _edit_json(root / "annotations.json", lambda d: d["annotations"][0].update(bbox=[1, 2, 3])),
        r"annotations\[0\] \(id 1\): bbox must be \[x, y, width, height\]",
    ),
    "yolo 4 fields": (
        "yolo",
        lambda root: _append_line(root / "train/labels/a.txt", "1 0.5 0.5 0.2"),
        r"train/labels/a\.txt: line 3: expected 5 values .* got 4",
    ),
    "yolo 6 fields": (
        "yolo",
        lambda root: _append_line(root / "train/labels/b.txt", "0 0.5 0.5 0.2 0.2 0.9"),
        r"train/labels/b\.txt: line 2: expected 5 values .* got 6",
    ),
    "yolo class outside names": (
        "yolo",
        lambda root: _append_line(root / "train/labels/b.txt", "7 0.5 0.5 0.2 0.2"),
        r"train/labels/b\.txt: line 2: class id 7 is not in .*data\.yaml \(classes 0\.\.1\)",
    ),
    "yolo non-number": (
        "yolo",
        lambda root: _append_line(root / "train/labels/a.txt", "0 0.5 abc 0.2 0.2"),
        r"train/labels/a\.txt: line 3: 'abc' is not a number",
    ),
    "yolo missing split folder": (
        "yolo",
        lambda root: _append_line(root / "data.yaml", "test: ../test/images"),
        r"data\.yaml: test: '\.\./test/images' not found",
    ),
    "yolo nc disagrees": (
        "yolo",
        lambda root: _append_line(root / "data.yaml", "nc: 3"),
        r"data\.yaml: nc is 3 but names lists 2 classes",
    ),
    "voc xml syntax": (
        "voc",
        lambda root: (root / "Annotations/p2.xml").write_text("<annotation>\n<filename>p2.jpg</filename>\n<object>"),
        r"Annotations/p2\.xml: not valid XML at line 3",
    ),
    "voc missing coordinate": (
        "voc",
        lambda root: (root / "Annotations/p1.xml").write_text(
            "<annotation><filename>p1.jpg</filename><object><name>ant</name>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax></bndbox></object></annotation>"
        ),
        r"Annotations/p1\.xml: object 1 \(ant\): <bndbox> has no <ymax>",
    ),
    "voc entity expansion": (
        "voc",
        lambda root: (root / "Annotations/p1.xml").write_text(
            '<!DOCTYPE a [<!ENTITY e "boom">]><annotation><filename>&e;</filename></annotation>'
        ),
        r"Annotations/p1\.xml: refused unsafe XML",
    ),
    "voc missing image": (
        "voc",
        lambda root: (root / "JPEGImages/p2.jpg").unlink(),
        r"JPEGImages/p2\.jpg: image file not found\. \(declared in .*Annotations/p2\.xml\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error_and_changes_nothing(workspace: Path, case: str) -> None:
    fmt, breaks, message = CASES[case]
    root = workspace / "data/raw/src"
    BUILDERS[fmt](root)
    run_import(workspace, fmt, root)
    output = workspace / "data/prepared/dataset.json"
    previous = output.read_bytes()
    breaks(root)
    source_before = tree_hash(root)

    with pytest.raises(DataError, match=message):
        run_import(workspace, fmt, root)

    assert output.read_bytes() == previous
    assert sorted(p.name for p in output.parent.iterdir()) == ["dataset.json"]  # no temp file left
    assert tree_hash(root) == source_before


def test_every_broken_image_is_listed_in_one_error(workspace: Path) -> None:
    root = workspace / "src"
    BUILDERS["coco"](root)
    (root / "images/one.jpg").unlink()
    (root / "images/two.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"2 image file\(s\) missing or unreadable") as failure:
        run_import(workspace, "coco", root)
    assert "one.jpg: image file not found" in str(failure.value)
    assert "two.png: image file is empty" in str(failure.value)


def test_wrong_format_or_missing_source_is_a_clear_error(workspace: Path) -> None:
    BUILDERS["coco"](workspace / "src")
    with pytest.raises(DataError, match=r"not a Pascal VOC folder \(Annotations/ not found\)"):
        run_import(workspace, "voc", workspace / "src")
    with pytest.raises(DataError, match=r"no data\.yaml or classes\.txt"):
        run_import(workspace, "yolo", workspace / "src")
    with pytest.raises(DataError, match=r"import\.source .*nowhere.* not found"):
        run_import(workspace, "coco", workspace / "nowhere")


def test_cli_prints_the_error_without_a_traceback(workspace: Path) -> None:
    root = workspace / "src"
    BUILDERS["yolo"](root)
    _append_line(root / "train/labels/a.txt", "1 0.5 0.5 0.2")

    result = CliRunner().invoke(app, ["--workspace", str(workspace), "import", "--format", "yolo", str(root)])

    assert result.exit_code == DataError.exit_code
    assert "error: " in result.output
    assert "a.txt: line 3" in " ".join(result.output.split())  # rich may wrap long lines
    assert "Traceback" not in result.output
    assert not (workspace / "data/prepared/dataset.json").exists()
