"""The tables Great Expectations checks: boxes joined with their image, images with their file check, classes.

Every rule of the gate is an expectation over one of these tables, so each derived quantity a rule
needs (box corners, area, the image's size plus tolerance, boxes per image, boxes per class) is a
column here. Rows are indexed by their position in the dataset's lists: GX hands back those
positions for offending rows, which identify a row even when its id is duplicated or missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from detops.dataset.canonical import Dataset

# File format PIL should report for each extension; other extensions are not checked.
EXTENSION_FORMATS = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".jpe": "JPEG",
    ".png": "PNG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}

INTEGRITY_COLUMNS = ("readable", "problem", "file_format", "file_width", "file_height")


def annotation_table(dataset: Dataset, tolerance_px: float) -> pd.DataFrame:
    """One row per box: its coordinates, corners, area, class name and its image's json size."""
    annotations = dataset["annotations"]
    coords = np.array([_bbox(a.get("bbox")) for a in annotations], dtype=float).reshape(-1, 4)
    table = pd.DataFrame(
        {
            "ann_id": [a.get("id") for a in annotations],
            "image_id": [a.get("image_id") for a in annotations],
            "category_id": [a.get("category_id") for a in annotations],
            "x": coords[:, 0],
            "y": coords[:, 1],
            "w": coords[:, 2],
            "h": coords[:, 3],
        }
    )
    table["x2"] = table["x"] + table["w"]
    table["y2"] = table["y"] + table["h"]
    table["area"] = table["w"] * table["h"]
    # Join by dict rather than DataFrame.merge: ids of mixed types (a hand-edited json) must not crash it.
    images: dict[Any, dict[str, Any]] = {}
    for im in dataset["images"]:
        images.setdefault(im.get("id"), im)  # a duplicated image id is reported on the image table
    names: dict[Any, str] = {}
    for c in dataset["categories"]:
        names.setdefault(c.get("id"), str(c.get("name")))
    joined = [images.get(a.get("image_id"), {}) for a in annotations]
    table["image_found"] = [a.get("image_id") in images for a in annotations]
    table["file_name"] = [im.get("file_name") for im in joined]
    table["image_width"] = [_number(im.get("width")) for im in joined]
    table["image_height"] = [_number(im.get("height")) for im in joined]
    table["category"] = [names.get(a.get("category_id")) for a in annotations]
    table["width_limit"] = table["image_width"] + tolerance_px
    table["height_limit"] = table["image_height"] + tolerance_px
    return table


def image_table(dataset: Dataset, integrity: pd.DataFrame) -> pd.DataFrame:
    """One row per image: json id and size, boxes it holds, the format its extension promises, file check."""
    images = dataset["images"]
    if len(integrity) != len(images) or not set(INTEGRITY_COLUMNS) <= set(integrity.columns):
        raise ValueError(
            f"integrity table must have one row per image ({len(images)}) and columns {INTEGRITY_COLUMNS}"
        )
    boxes = pd.Series([a.get("image_id") for a in dataset["annotations"]]).value_counts()
    table = pd.DataFrame(
        {
            "image_id": [im.get("id") for im in images],
            "file_name": [im.get("file_name") for im in images],
            "width": [_number(im.get("width")) for im in images],
            "height": [_number(im.get("height")) for im in images],
            "ext_format": [_extension_format(im.get("file_name")) for im in images],
        }
    )
    table["n_boxes"] = table["image_id"].map(boxes).fillna(0).astype(int)
    return pd.concat([table, integrity.loc[:, list(INTEGRITY_COLUMNS)].reset_index(drop=True)], axis=1)


def category_table(dataset: Dataset, kept_annotations: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per class with the number of boxes among `kept_annotations` (those that passed the box rules)."""
    counts = pd.Series([a.get("category_id") for a in kept_annotations], dtype=object).value_counts()
    categories = dataset["categories"]
    table = pd.DataFrame(
        {
            "category_id": [c.get("id") for c in categories],
            "name": [str(c.get("name")) for c in categories],
        }
    )
    table["n_boxes"] = table["category_id"].map(counts).fillna(0).astype(int)
    return table


def _bbox(bbox: Any) -> list[float]:
    """[x, y, w, h] as floats; anything malformed becomes NaN so the not-null rules name the box."""
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4:
        return [_number(v) for v in bbox]
    return [math.nan] * 4


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _extension_format(file_name: Any) -> str | None:
    if not isinstance(file_name, str):
        return None
    return EXTENSION_FORMATS.get(PurePosixPath(file_name).suffix.lower())
