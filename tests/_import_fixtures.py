"""Small datasets on disk for the import/export tests, built with PIL in a temporary folder.

`coco_with_edge_cases` is the project's synthetic sample (30 images) plus the files importers get
wrong: a name with a space and non-ASCII letters, a grayscale PNG, an RGBA PNG, a 16-bit PNG and a
JPEG stored sideways with EXIF orientation 6. The tiny per-format datasets feed the bad-input tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detops.config import load_params
from detops.config.sample import SampleParams
from detops.dataset.canonical import Dataset, read_dataset
from detops.sample.generate import generate_sample
from detops.steps import import_
from detops.steps.result import StepResult
from detops.workspace import Workspace

EXIF_ORIENTATION = 0x0112
ROTATED_STORED = (60, 40)  # pixels as stored; EXIF orientation 6 shows them as 40 wide, 60 high


def draw(path: Path, size: tuple[int, int], mode: str = "RGB", orientation: int | None = None, seed: int = 0) -> Path:
    """A small image with some structure (so JPEG and PNG do real work), in the given PIL mode."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.add.outer(np.arange(h), np.arange(w)).astype(np.float64) / (w + h)
    if mode == "I;16":
        image = Image.fromarray((ramp * 65535).astype(np.uint16))
    else:
        rgb = np.stack([ramp, ramp[::-1], rng.uniform(0, 1, (h, w))], axis=-1)
        image = Image.fromarray((rgb * 255).astype(np.uint8), "RGB").convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        image.save(path, exif=exif.tobytes())
    else:
        image.save(path)
    return path


def coco_with_edge_cases(root: Path, num_images: int = 30) -> Path:
    """The sample dataset in `root` plus five awkward images with boxes; returns the json path.

    The first half of the images get a `source_split` (train/val/test in turn) so split handling is
    exercised; the rest have none.
    """
    params = SampleParams(num_images=num_images, image_size=64, max_object_size=32, workers=1)
    ann_path = generate_sample(root, params)
    data = json.loads(ann_path.read_text(encoding="utf-8"))
    for k, image in enumerate(data["images"][: num_images // 2]):
        image["source_split"] = ("train", "val", "test")[k % 3]
    extras = [
        ("images/a b ü.jpg", (48, 40), "RGB", None),
        ("images/gray.png", (50, 30), "L", None),
        ("images/rgba.png", (40, 44), "RGBA", None),
        ("images/deep16.png", (36, 52), "I;16", None),
        ("images/rotated.jpg", ROTATED_STORED, "RGB", 6),
    ]
    next_image = max(im["id"] for im in data["images"]) + 1
    next_ann = max(a["id"] for a in data["annotations"]) + 1
    for k, (name, size, mode, orientation) in enumerate(extras):
        draw(root / name, size, mode, orientation, seed=k)
        width, height = (size[1], size[0]) if orientation == 6 else size
        data["images"].append({"id": next_image, "file_name": name, "width": width, "height": height})
        for j, box in enumerate(([2.5, 3.25, 10.0, 12.5], [width - 15.0, height - 9.0, 15.0, 9.0])):
            data["annotations"].append(
                {
                    "id": next_ann,
                    "image_id": next_image,
                    "category_id": data["categories"][(k + j) % len(data["categories"])]["id"],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
            next_ann += 1
        next_image += 1
    ann_path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return ann_path


def tiny_coco(root: Path) -> Path:
    """Two images, three boxes, two categories with non-contiguous ids."""
    draw(root / "images/one.jpg", (40, 30))
    draw(root / "images/two.png", (32, 32), seed=1)
    data = {
        "images": [
            {"id": 10, "file_name": "images/one.jpg", "width": 40, "height": 30},
            {"id": 20, "file_name": "images/two.png", "width": 32, "height": 32},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [1, 2, 10, 12], "area": 120, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [5.5, 6, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 5, "image_id": 20, "category_id": 3, "bbox": [0, 0, 32, 32], "area": 1024, "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "cat", "supercategory": ""}, {"id": 7, "name": "dog", "supercategory": ""}],
    }
    path = root / "annotations.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def tiny_yolo(root: Path) -> Path:
    """Ultralytics layout as Roboflow exports it: `../train/images` paths and a `valid` folder."""
    draw(root / "train/images/a.jpg", (40, 20))
    draw(root / "train/images/b.png", (20, 40), seed=1)
    draw(root / "valid/images/c.jpg", (50, 50), seed=2)
    (root / "train/labels").mkdir(parents=True)
    (root / "valid/labels").mkdir(parents=True)
    (root / "train/labels/a.txt").write_text("0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n", encoding="utf-8")
    (root / "train/labels/b.txt").write_text("1 0.5 0.5 1 1\n", encoding="utf-8")
    (root / "valid/labels/c.txt").write_text("", encoding="utf-8")
    spec = root / "data.yaml"
    spec.write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: {0: red, 1: blue}\n", encoding="utf-8")
    return spec


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple[str, tuple[float, ...]]]) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def tiny_voc(root: Path) -> Path:
    """Two annotated images with train/val ImageSets."""
    draw(root / "JPEGImages/p1.jpg", (40, 30))
    draw(root / "JPEGImages/p2.jpg", (30, 40), seed=1)
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations/p1.xml").write_text(
        voc_xml("p1.jpg", (40, 30), [("zebra", (1, 2, 11, 12)), ("ant", (5, 5, 5, 9))]), encoding="utf-8"
    )
    (root / "Annotations/p2.xml").write_text(voc_xml("p2.jpg", (30, 40), [("ant", (0, 0, 30, 40))]), encoding="utf-8")
    sets = root / "ImageSets/Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("p1\n", encoding="utf-8")
    (sets / "val.txt").write_text("p2\n", encoding="utf-8")
    return root


BUILDERS = {"coco": tiny_coco, "yolo": tiny_yolo, "voc": tiny_voc}


def workspace_for(ws_root: Path, fmt: str, source: Path | str, *overrides: str) -> Workspace:
    params = load_params(None, (f"import.format={fmt}", f"import.source={source}", *overrides))
    return Workspace.at(ws_root, params)


def run_import(ws_root: Path, fmt: str, source: Path | str, *overrides: str) -> tuple[StepResult, Dataset]:
    ws = workspace_for(ws_root, fmt, source, *overrides)
    result = import_.run(ws)
    return result, read_dataset(ws.dataset_json)


def boxes_by_file(dataset: Dataset) -> dict[str, list[tuple[str, list[float]]]]:
    """Image base name -> sorted (class name, bbox): compares datasets whose file layout differs."""
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    base = {im["id"]: Path(im["file_name"]).name for im in dataset["images"]}
    out: dict[str, list[tuple[str, list[float]]]] = {name: [] for name in base.values()}
    for ann in dataset["annotations"]:
        out[base[ann["image_id"]]].append((names[ann["category_id"]], [float(v) for v in ann["bbox"]]))
    return {k: sorted(v) for k, v in out.items()}


def images_by_file(dataset: Dataset) -> dict[str, dict[str, Any]]:
    return {Path(im["file_name"]).name: im for im in dataset["images"]}
