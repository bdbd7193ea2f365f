"""Shared rules for writing a dataset out: where each image goes and how it gets there."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any


def place_image(src: Path, dst: Path) -> None:
    """Hard-link `src` to `dst` (no copy, same bytes), or copy when linking is not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links unsupported
        shutil.copy2(src, dst)


def flat_file_names(images: list[dict[str, Any]]) -> dict[int, str]:
    """A file name per image id for formats that keep all images in one folder (VOC, YOLO splits).

    The base name is kept when its stem is unique (case-insensitively: label and xml files are
    named by stem, and some filesystems ignore case); clashing stems get the image id appended.
    """
    stems = Counter(PurePosixPath(im["file_name"]).stem.lower() for im in images)
    used: set[str] = set()
    names: dict[int, str] = {}
    for im in images:
        path = PurePosixPath(im["file_name"])
        stem = path.stem if stems[path.stem.lower()] == 1 else f"{path.stem}_{im['id']}"
        candidate, n = stem, 1
        while candidate.lower() in used:
            candidate, n = f"{stem}_{n}", n + 1
        used.add(candidate.lower())
        names[int(im["id"])] = candidate + path.suffix
    return names


def boxes_by_image(dataset: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in dataset["images"]}
    for ann in dataset["annotations"]:
        out[int(ann["image_id"])].append(ann)
    return out


def number(value: float) -> str:
    """Shortest text for a coordinate: `12` for integers, else up to 6 decimals."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")
