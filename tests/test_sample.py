"""The synthetic sample: deterministic bytes, valid COCO, tight boxes, truncation, occlusion, imbalance."""

from __future__ import annotations

import hashlib
import json
import struct
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from detops.cli import app
from detops.config import validate_params
from detops.config.sample import SampleParams, ShapeName
from detops.errors import ParamsError
from detops.sample.generate import ANNOTATIONS_FILE, generate_sample
from detops.sample.shapes import OUTLINES, rasterize


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / ANNOTATIONS_FILE).read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def larger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleParams]:
    """One 120-image generation shared by the statistical tests (about 2 s)."""
    params = SampleParams(num_images=120, seed=3)
    root = tmp_path_factory.mktemp("sample120")
    generate_sample(root, params)
    return root, params


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    serial = generate_sample(tmp_path / "a", SampleParams(num_images=40, workers=1)).parent
    pooled = generate_sample(tmp_path / "b", SampleParams(num_images=40, workers=2)).parent
    first, second = _hashes(serial), _hashes(pooled)
    assert len(first) == 41  # 40 images + annotations.json
    assert first == second


def test_different_seed_different_dataset(tmp_path: Path) -> None:
    a = _hashes(generate_sample(tmp_path / "a", SampleParams(num_images=6, seed=0)).parent)
    b = _hashes(generate_sample(tmp_path / "b", SampleParams(num_images=6, seed=1)).parent)
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_png_files_hold_no_metadata(larger: tuple[Path, SampleParams]) -> None:
    """Only IHDR/IDAT/IEND chunks: no timestamp or software tag that could change the bytes."""
    root, _ = larger
    data = (root / "images" / "000001.png").read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.append(kind.decode())
        offset += 12 + length
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}


def test_coco_structure(larger: tuple[Path, SampleParams]) -> None:
    root, params = larger
    coco = _load(root)
    assert len(coco["images"]) == params.num_images
    assert [c["name"] for c in coco["categories"]] == params.classes
    assert len(coco["categories"]) >= 4
    assert {c["id"] for c in coco["categories"]} == set(range(1, len(params.classes) + 1))
    assert len({im["id"] for im in coco["images"]}) == params.num_images
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    image_ids = {im["id"] for im in coco["images"]}
    for im in coco["images"][:10]:
        assert im["file_name"].startswith("images/") and not Path(im["file_name"]).is_absolute()
        with Image.open(root / im["file_name"]) as img:
            assert img.size == (im["width"], im["height"]) == (params.image_size, params.image_size)
            assert img.mode == "RGB"
    for a in coco["annotations"]:
        assert a["image_id"] in image_ids
        assert a["iscrowd"] == 0
        assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=1e-3)
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    assert set(per_image) == image_ids  # every image has at least one object
    assert max(per_image.values()) <= params.max_objects_per_image


def test_boxes_inside_image_and_sizes_within_bounds(larger: tuple[Path, SampleParams]) -> None:
    root, params = larger
    boxes = np.array([a["bbox"] for a in _load(root)["annotations"]])
    x, y, w, h = boxes.T
    size = params.image_size
    assert (w > 0).all() and (h > 0).all()
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= size).all() and (y + h <= size).all()
    assert (np.maximum(w, h) <= params.max_object_size + 0.5).all()
    whole = (x > 0) & (y > 0) & (x + w < size) & (y + h < size)
    longest = np.maximum(w, h)[whole]
    assert (longest >= params.min_object_size - 0.5).all()
    assert 16 <= np.median(longest) <= 96  # most objects are medium-sized


def test_some_objects_are_truncated_and_some_overlap(larger: tuple[Path, SampleParams]) -> None:
    root, params = larger
    by_image: dict[int, list[list[float]]] = {}
    for a in _load(root)["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    boxes = [b for bs in by_image.values() for b in bs]
    touching = [
        b
        for b in boxes
        if b[0] == 0 or b[1] == 0 or b[0] + b[2] >= params.image_size or b[1] + b[3] >= params.image_size
    ]
    assert 0.05 * len(boxes) < len(touching) < 0.6 * len(boxes)

    def overlap(p: list[float], q: list[float]) -> bool:
        return min(p[0] + p[2], q[0] + q[2]) > max(p[0], q[0]) and min(p[1] + p[3], q[1] + q[3]) > max(p[1], q[1])

    pairs = sum(overlap(p, q) for bs in by_image.values() for i, p in enumerate(bs) for q in bs[:i])
    assert pairs >= 10


def test_class_frequencies_follow_the_weights(larger: tuple[Path, SampleParams]) -> None:
    root, params = larger
    counts = Counter(a["category_id"] for a in _load(root)["annotations"])
    total = sum(counts.values())
    shares = [counts[i + 1] / total for i in range(len(params.classes))]
    expected = [w / sum(params.class_weights) for w in params.class_weights]
    assert shares == sorted(shares, reverse=True)  # 40/30/20/10 stays in that order
    assert shares[0] > 3 * shares[-1]
    assert all(abs(s - e) < 0.06 for s, e in zip(shares, expected, strict=True))


def test_objects_stand_out_from_the_background(larger: tuple[Path, SampleParams]) -> None:
    """An object's centre differs from the background just outside its box by far more than the pixel noise."""
    root, params = larger
    coco = _load(root)
    images = {im["id"]: im for im in coco["images"][:20]}
    gaps = []
    for a in coco["annotations"]:
        x, y, w, h = (round(v) for v in a["bbox"])
        if a["image_id"] not in images or min(w, h) < 12 or y < 3 or y + h + 3 > params.image_size:
            continue
        gray = Image.open(root / images[a["image_id"]]["file_name"]).convert("L")
        pixels = np.asarray(gray, dtype=np.float32)
        centre = pixels[y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3]
        outside = np.concatenate([pixels[y - 3 : y, x : x + w].ravel(), pixels[y + h : y + h + 3, x : x + w].ravel()])
        gaps.append(abs(float(np.median(centre)) - float(np.median(outside))))
    assert len(gaps) >= 20
    assert np.mean(np.array(gaps) > 3 * params.noise_std) > 0.85


def test_box_is_the_extent_of_the_drawn_mask() -> None:
    square = rasterize("square", 20.0, 0.0, 1.0, (50.3, 60.7), 128, 4)
    assert square is not None
    x, y, w, h = square.box
    assert w == pytest.approx(20, abs=0.5) and h == pytest.approx(20, abs=0.5)
    assert x + w / 2 == pytest.approx(50.3, abs=0.5) and y + h / 2 == pytest.approx(60.7, abs=0.5)
    ink_rows = np.flatnonzero(square.alpha.sum(axis=1) > 0) + square.top
    ink_cols = np.flatnonzero(square.alpha.sum(axis=0) > 0) + square.left
    assert np.floor(x) == ink_cols[0] and np.ceil(x + w) == ink_cols[-1] + 1
    assert np.floor(y) == ink_rows[0] and np.ceil(y + h) == ink_rows[-1] + 1
    assert square.area == pytest.approx(square.full_area) == pytest.approx(400, rel=0.05)


def test_box_is_clipped_at_the_border() -> None:
    star = rasterize("star", 40.0, 0.3, 1.0, (5.0, 100.0), 128, 4)
    assert star is not None
    x, _, w, _ = star.box
    assert x == 0 and 0 < w < 30
    assert 0 < star.area < star.full_area
    assert rasterize("circle", 10.0, 0.0, 1.0, (-20.0, 50.0), 128, 4) is None


def test_every_configurable_class_has_a_silhouette(tmp_path: Path) -> None:
    assert set(OUTLINES) == set(get_args(ShapeName))
    params = SampleParams(num_images=4, classes=["cross", "star"], class_weights=[1, 1])
    coco = _load(generate_sample(tmp_path, params).parent)
    assert [c["name"] for c in coco["categories"]] == ["cross", "star"]
    assert {a["category_id"] for a in coco["annotations"]} <= {1, 2}


@pytest.mark.parametrize(
    "sample",
    [
        {"class_weights": [1.0, 2.0]},
        {"classes": ["circle", "circle", "star", "square"]},
        {"class_weights": [1.0, 0.0, 1.0, 1.0]},
        {"classes": ["hexagon", "circle", "star", "square"]},
        {"min_object_size": 64, "max_object_size": 32},
    ],
)
def test_inconsistent_params_are_rejected(sample: dict[str, Any]) -> None:
    with pytest.raises(ParamsError, match="sample"):
        validate_params({"sample": sample})


def test_cli_sample_writes_the_dataset_atomically(workspace: Path) -> None:
    runner = CliRunner()
    args = ["--workspace", str(workspace), "--set", "sample.num_images=20", "sample"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    target = workspace / "data" / "raw" / "sample"
    coco = _load(target)
    assert len(coco["images"]) == 20
    assert len(list((target / "images").glob("*.png"))) == 20
    assert "boxes/circle" in first.output
    # A rerun with fewer images replaces the folder as a whole: no stale images, no temp folders left.
    second = runner.invoke(app, [*args[:3], "sample.num_images=5", "sample"])
    assert second.exit_code == 0, second.output
    assert len(list((target / "images").glob("*.png"))) == 5
    assert sorted(p.name for p in target.parent.iterdir()) == ["sample"]
