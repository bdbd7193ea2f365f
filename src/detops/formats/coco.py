"""COCO instances json: read into a `SourceDataset`, write a canonical dataset back out.

Image, annotation and category ids are kept as given. Import refuses only what makes the json
structurally wrong (duplicate ids, references to unknown images or categories, malformed boxes);
boxes outside the image or of zero area are the validate step's business.

A `file_name` is looked up relative to the dataset root, then relative to the json's folder, then
under `images/` (the three layouts COCO exports use); the canonical `file_name` is the path
relative to the root where the file was found.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from detops.dataset.canonical import SPLITS, Dataset
from detops.dataset.paths import safe_relative
from detops.errors import DataError
from detops.formats.layout import place_image
from detops.formats.source import RESERVED_IMAGE_KEYS, SourceBox, SourceDataset, SourceImage

DEFAULT_NAME = "annotations.json"


def find_annotations(root: Path) -> Path:
    """`annotations.json` in the root, else the root's only `*.json`."""
    if (root / DEFAULT_NAME).is_file():
        return root / DEFAULT_NAME
    candidates = sorted(root.glob("*.json"))
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "none"
    raise DataError(
        f"{root}: cannot tell which file holds the COCO annotations (no {DEFAULT_NAME}; *.json found: {found}). "
        "Pass --annotations FILE."
    )


def read_coco(root: Path, annotations: Path | None = None) -> SourceDataset:
    path = annotations or find_annotations(root)
    data = _load_json(path)
    categories = _categories(data["categories"], path)
    images, index_of = _images(data["images"], path, root)
    boxes = _boxes(data["annotations"], path, index_of, {c["id"] for c in categories})
    return SourceDataset(root=root, format="coco", images=images, boxes=boxes, categories=categories)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found.") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it a JSON file?") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO json object with images, annotations and categories.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the COCO list {key!r}; is this an instances json?")
    return data


def _categories(items: list[Any], path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, cat in enumerate(items):
        where = f"{path} categories[{i}]"
        _require_object(cat, where)
        cid = _int_field(cat, "id", where)
        if cid in seen:
            raise DataError(f"{where}: duplicate category id {cid}; each category needs its own id.")
        seen.add(cid)
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where} (id {cid}): missing category name.")
        out.append({"id": cid, "name": name, "supercategory": str(cat.get("supercategory") or "")})
    return out


def _images(items: list[Any], path: Path, root: Path) -> tuple[list[SourceImage], dict[int, int]]:
    json_dir = _relative_dir(path.parent, root)
    images: list[SourceImage] = []
    index_of: dict[int, int] = {}
    by_name: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{path} images[{i}]"
        _require_object(item, where)
        image_id = _int_field(item, "id", where)
        where = f"{where} (id {image_id})"
        if image_id in index_of:
            raise DataError(f"{where}: duplicate image id {image_id} (also images[{index_of[image_id]}]).")
        raw_name = item.get("file_name")
        if not isinstance(raw_name, str):
            raise DataError(f"{where}: missing file_name.")
        file_name = _locate(safe_relative(raw_name, where), root, json_dir)
        if file_name in by_name:
            raise DataError(f"{where}: file {file_name!r} is already image id {by_name[file_name]}.")
        split = item.get("source_split")
        if split is not None and split not in SPLITS:
            raise DataError(f"{where}: source_split {split!r} is not one of {', '.join(SPLITS)}.")
        index_of[image_id] = i
        by_name[file_name] = image_id
        images.append(
            SourceImage(
                file_name=file_name,
                where=where,
                id=image_id,
                width=_optional_int(item, "width", where),
                height=_optional_int(item, "height", where),
                source_split=split,
                attributes={k: v for k, v in item.items() if k not in RESERVED_IMAGE_KEYS},
            )
        )
    return images, index_of


def _relative_dir(folder: Path, root: Path) -> str | None:
    try:
        rel = folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    return None if rel == "." else rel


def _locate(file_name: str, root: Path, json_dir: str | None) -> str:
    """The first of the usual COCO layouts where the file exists; as given when none has it."""
    candidates = [file_name, *([f"{json_dir}/{file_name}"] if json_dir else []), f"images/{file_name}"]
    return next((c for c in candidates if (root / c).is_file()), file_name)


def _boxes(items: list[Any], path: Path, index_of: dict[int, int], category_ids: set[int]) -> list[SourceBox]:
    boxes: list[SourceBox] = []
    seen: set[int] = set()
    for i, ann in enumerate(items):
        where = f"{path} annotations[{i}]"
        _require_object(ann, where)
        ann_id = _int_field(ann, "id", where)
        where = f"{where} (id {ann_id})"
        if ann_id in seen:
            raise DataError(f"{where}: duplicate annotation id {ann_id}.")
        seen.add(ann_id)
        image_id = _int_field(ann, "image_id", where)
        if image_id not in index_of:
            raise DataError(f"{where}: image_id {image_id} is not in images.")
        category_id = _int_field(ann, "category_id", where)
        if category_id not in category_ids:
            raise DataError(f"{where}: category_id {category_id} is not in categories.")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise DataError(f"{where}: bbox must be [x, y, width, height] as 4 finite numbers, got {bbox!r}.")
        area = ann.get("area")
        boxes.append(
            SourceBox(
                image=index_of[image_id],
                category_id=category_id,
                bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
                id=ann_id,
                area=float(area) if _is_number(area) else None,
                iscrowd=1 if ann.get("iscrowd") else 0,
            )
        )
    return boxes


def _require_object(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}.")


def _int_field(item: dict[str, Any], key: str, where: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: {key} must be an integer, got {value!r}.")
    return value


def _optional_int(item: dict[str, Any], key: str, where: str) -> int | None:
    return None if item.get(key) is None else _int_field(item, key, where)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_coco(dataset: Dataset, image_paths: dict[int, Path], out: Path) -> list[str]:
    """`annotations.json` plus the images at their canonical relative paths: the importer's own layout."""
    for im in dataset["images"]:
        place_image(image_paths[int(im["id"])], out / im["file_name"])
    info = {k: v for k, v in dataset.get("info", {}).items() if k != "root"}
    payload = {
        "info": info,
        "images": dataset["images"],
        "annotations": dataset["annotations"],
        "categories": dataset["categories"],
    }
    (out / DEFAULT_NAME).write_text(json.dumps(payload, ensure_ascii=False) + "\n", encoding="utf-8")
    return []
