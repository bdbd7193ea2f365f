"""Read, write and slice the canonical COCO json that every step after `import` consumes.

Shape (plain COCO plus a few documented extras)::

    info:        {root, source_format, content_hash, detops_version}
    images:      [{id, file_name, width, height, source_split?, sha1, ...attributes}]
    annotations: [{id, image_id, category_id, bbox: [x, y, w, h], area, iscrowd}]
    categories:  [{id, name, supercategory}]

`info.root` is the raw dataset folder, relative to the workspace when inside it, so a clone of the
repository resolves the same images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from detops.atomic import write_json
from detops.errors import DataError

Dataset = dict[str, Any]

SPLITS = ("train", "val", "test")


def read_dataset(path: Path) -> Dataset:
    """Load a canonical dataset json; a missing or malformed file is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found. Run the step that writes it first.")
    try:
        data: Dataset = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}).") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the COCO list {key!r}.")
    return data


def write_dataset(path: Path, dataset: Dataset) -> Path:
    """Write atomically, with a stable key order so an unchanged dataset hashes the same."""
    return write_json(Path(path), dataset, indent=None)


def dataset_root(dataset: Dataset, workspace_root: Path) -> Path:
    """Absolute folder that the images' `file_name`s are relative to."""
    root = Path(dataset.get("info", {}).get("root", "."))
    return root if root.is_absolute() else Path(workspace_root) / root


def image_path(dataset: Dataset, image: dict[str, Any], workspace_root: Path) -> Path:
    return dataset_root(dataset, workspace_root) / image["file_name"]


def subset(dataset: Dataset, image_ids: Iterable[int], drop_annotation_ids: Iterable[int] = ()) -> Dataset:
    """A copy holding only `image_ids` (in dataset order) and their annotations, minus dropped ones."""
    keep = set(image_ids)
    dropped = set(drop_annotation_ids)
    return {
        **{k: v for k, v in dataset.items() if k not in ("images", "annotations")},
        "images": [im for im in dataset["images"] if im["id"] in keep],
        "annotations": [
            a for a in dataset["annotations"] if a["image_id"] in keep and a["id"] not in dropped
        ],
    }


def annotation_hash(dataset: Dataset) -> str:
    """Hash of images (incl. their content sha1), boxes and categories: the dataset's version id."""
    payload = {
        "images": sorted(
            (im["file_name"], im.get("sha1", ""), im["width"], im["height"]) for im in dataset["images"]
        ),
        "annotations": sorted(
            (a["image_id"], a["category_id"], *[round(float(v), 3) for v in a["bbox"]])
            for a in dataset["annotations"]
        ),
        "categories": sorted((c["id"], c["name"]) for c in dataset["categories"]),
    }
    blob = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def category_names(dataset: Dataset) -> dict[int, str]:
    return {int(c["id"]): str(c["name"]) for c in dataset["categories"]}
