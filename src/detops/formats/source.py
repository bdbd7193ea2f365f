"""A dataset as a format reader declares it, and its conversion to the canonical COCO json.

Readers only parse annotation files. The image files are read afterwards, all at once in a thread
pool, and `to_canonical` then fills in each image's real size and sha1, converts YOLO's
normalised boxes with that size, and reports where the annotations disagree with the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from detops import __version__
from detops.dataset.canonical import Dataset, annotation_hash
from detops.dataset.images import ImageInfo
from detops.dataset.paths import resolve_inside
from detops.errors import DataError

# Image files a folder scan picks up (Ultralytics' list, minus formats Pillow cannot open).
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp"})

# Folder and file names that mean a split, as datasets spell them.
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

# Image keys that import computes; a source's own values for them are not kept as attributes.
RESERVED_IMAGE_KEYS = frozenset({"id", "file_name", "width", "height", "sha1", "source_split"})

_MAX_LISTED = 5


@dataclass
class SourceImage:
    """One image as the annotations name it; `file_name` is already checked to stay inside the root."""

    file_name: str
    where: str  # annotation file (and object) that declares it, for error messages
    id: int | None = None  # kept when the source has ids (COCO); numbered 1..N otherwise
    width: int | None = None  # as the annotation declares it; None when the format has no size
    height: int | None = None
    source_split: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceBox:
    """One box; `image` indexes `SourceDataset.images`."""

    image: int
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels, or cx, cy, w, h as shares
    normalized_center: bool = False  # YOLO: shares of the displayed (EXIF-oriented) image
    id: int | None = None
    area: float | None = None
    iscrowd: int = 0


@dataclass
class SourceDataset:
    root: Path
    format: str
    images: list[SourceImage]
    boxes: list[SourceBox]
    categories: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def image_paths(self) -> list[Path]:
        """Absolute path of every image; a symlink leading out of the root is refused here."""
        return [resolve_inside(self.root, im.file_name, im.where) for im in self.images]


def split_from_parts(parts: tuple[str, ...]) -> str | None:
    """The split a file's folders name (`train/images/x.jpg`, `images/valid/x.jpg`), innermost first."""
    for part in reversed(parts):
        split = SPLIT_NAMES.get(part.lower())
        if split:
            return split
    return None


def listing(items: list[str], limit: int = _MAX_LISTED) -> str:
    """The first few items of a long list, for a message that stays readable."""
    shown = "; ".join(items[:limit])
    return shown + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")


def to_canonical(
    source: SourceDataset,
    infos: list[ImageInfo],
    root_label: str,
    size_mismatch: Literal["warn", "error"] = "warn",
) -> tuple[Dataset, list[str]]:
    """The canonical dataset and the notes worth showing; sizes always come from the image files."""
    notes = list(source.notes)
    images: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for index, (im, info) in enumerate(zip(source.images, infos, strict=True)):
        if im.width is not None and im.height is not None and (im.width, im.height) != (info.width, info.height):
            rotated = f", EXIF orientation {info.orientation}" if info.rotated else ""
            mismatches.append(
                f"{im.file_name}: {im.width}x{im.height} in {im.where}, {info.width}x{info.height} in the file{rotated}"
            )
        entry: dict[str, Any] = {
            "id": im.id if im.id is not None else index + 1,
            "file_name": im.file_name,
            "width": info.width,
            "height": info.height,
        }
        if im.source_split:
            entry["source_split"] = im.source_split
        entry["sha1"] = info.sha1
        entry.update({k: v for k, v in im.attributes.items() if k not in RESERVED_IMAGE_KEYS})
        images.append(entry)
    if mismatches:
        summary = f"{len(mismatches)} image(s) whose annotation size differs from the file: {listing(mismatches)}"
        if size_mismatch == "error":
            raise DataError(
                f"{summary}. The file's size is what the pixels are; set import.size_mismatch=warn to import "
                "with it, or fix the annotations."
            )
        notes.append(f"{summary} (the file's size is used).")

    annotations = [_annotation(box, images[box.image], k) for k, box in enumerate(source.boxes)]
    dataset: Dataset = {
        "info": {"root": root_label, "source_format": source.format, "content_hash": "", "detops_version": __version__},
        "images": images,
        "annotations": annotations,
        "categories": source.categories,
    }
    dataset["info"]["content_hash"] = annotation_hash(dataset)
    return dataset, notes


def _annotation(box: SourceBox, image: dict[str, Any], index: int) -> dict[str, Any]:
    if box.normalized_center:
        cx, cy, w, h = box.bbox
        width, height = image["width"], image["height"]
        corner = (cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height
        bbox = [round(v, 4) for v in corner]
    else:
        bbox = [float(v) for v in box.bbox]
    return {
        "id": box.id if box.id is not None else index + 1,
        "image_id": image["id"],
        "category_id": box.category_id,
        "bbox": bbox,
        "area": box.area if box.area is not None else round(bbox[2] * bbox[3], 4),
        "iscrowd": box.iscrowd,
    }


def finite_number(text: str, where: str) -> float:
    """A coordinate from a label file: a NaN or an infinity is as wrong as a word."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {text!r} is not a finite number.")
    return value
