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
    image_ids = [a.get("image_id") for a in annotations]
    category_ids = [a.get("category_id") for a in annotations]
    coords = _coordinates([a.get("bbox") for a in annotations])
    table = pd.DataFrame(
        {
            "ann_id": [a.get("id") for a in annotations],
            "image_id": image_ids,
            "category_id": category_ids,
            "x": coords[:, 0],
            "y": coords[:, 1],
            "w": coords[:, 2],
            "h": coords[:, 3],
        }
    )
    table["x2"] = table["x"] + table["w"]
    table["y2"] = table["y"] + table["h"]
    table["area"] = table["w"] * table["h"]
    # Join through dicts rather than DataFrame.merge: ids of mixed types (a hand-edited json) must not crash it.
    images = dataset["images"]
    first: dict[Any, int] = {}
    for pos, im in enumerate(images):
        first.setdefault(im.get("id"), pos)  # a duplicated image id is reported on the image table
    at = np.array([first.get(i, -1) for i in image_ids], dtype=np.int64)  # -1: no such image
    none = [None]  # what a box without an image joins: the extra last element picked by -1
    table["image_found"] = at >= 0
    table["file_name"] = np.array([im.get("file_name") for im in images] + none, dtype=object)[at]
    table["image_width"] = np.array([_number(im.get("width")) for im in images] + [math.nan])[at]
    table["image_height"] = np.array([_number(im.get("height")) for im in images] + [math.nan])[at]
    names: dict[Any, str] = {}
    for c in dataset["categories"]:
        names.setdefault(c.get("id"), str(c.get("name")))
    table["category"] = [names.get(c) for c in category_ids]
    table["width_limit"] = table["image_width"] + tolerance_px
    table["height_limit"] = table["image_height"] + tolerance_px
    return table


def image_table(dataset: Dataset, integrity: pd.DataFrame) -> pd.DataFrame:
    """One row per image: json id and size, boxes it holds, the format its extension promises, file check."""
    images = dataset["images"]
    if len(integrity) != len(images) or not set(INTEGRITY_COLUMNS) <= set(integrity.columns):
        raise ValueError(f"integrity table must have one row per image ({len(images)}) and columns {INTEGRITY_COLUMNS}")
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


def _coordinates(bboxes: list[Any]) -> np.ndarray:
    """(n, 4) float array of [x, y, w, h]; a malformed bbox becomes NaN so the not-null rules name its box."""
    if not bboxes:
        return np.empty((0, 4))
    try:  # fast path: every bbox is four numbers
        array = np.array(bboxes)
        if array.shape == (len(bboxes), 4) and array.dtype.kind in "fiu":
            return array.astype(float)
    except ValueError:  # ragged lists
        pass
    return np.array([_bbox(b) for b in bboxes], dtype=float)


def _bbox(bbox: Any) -> list[float]:
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
