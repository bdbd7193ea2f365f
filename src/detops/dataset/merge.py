"""One canonical dataset from the main dataset and its accepted batches.

File names are re-rooted on the folder the sources share (`sample/images/1.png`, `accepted/b1/2.png`), ids
are renumbered, and a batch's classes are mapped to the main dataset's by name: a class the dataset does not
have is an error, since training on it would silently change the model's classes. Old images keep their
split through their content sha1 (split.stable), whatever their new file name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from detops.dataset.canonical import Dataset, annotation_hash, dataset_root
from detops.dataset.classes import check_classes


def merge(main: Dataset, batches: dict[str, Dataset], workspace_root: Path) -> Dataset:
    """`main` plus every batch (name -> dataset), rooted on the folder they share."""
    if not batches:
        return main
    roots = [dataset_root(main, workspace_root), *(dataset_root(d, workspace_root) for d in batches.values())]
    common = Path(os.path.commonpath([str(r.resolve()) for r in roots]))
    ids = {c["name"]: c["id"] for c in main["categories"]}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for name, dataset in (("", main), *batches.items()):
        prefix = dataset_root(dataset, workspace_root).resolve().relative_to(common).as_posix()
        known = {c["id"]: c["name"] for c in dataset["categories"]}
        check_classes(known.values(), ids.keys(), who=f"batch {name!r}", ref="the dataset",
                      fix="Relabel the batch with the dataset's class names, or add the classes to the dataset first.")
        new_id = {}
        for image in dataset["images"]:
            new_id[image["id"]] = len(images) + 1
            file_name = f"{prefix}/{image['file_name']}" if prefix not in ("", ".") else image["file_name"]
            images.append({**image, "id": new_id[image["id"]], "file_name": file_name,
                           **({"batch": name} if name else {})})
        for ann in dataset["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": new_id[ann["image_id"]],
                                "category_id": ids[known[ann["category_id"]]]})
    info = {**main["info"], "root": _relative(common, workspace_root), "batches": sorted(batches)}
    merged = {**main, "info": info, "images": images, "annotations": annotations}
    merged["info"]["content_hash"] = annotation_hash(merged)
    return merged


def _relative(path: Path, workspace_root: Path) -> str:
    """Relative to the workspace when inside it (a clone resolves the same images), else absolute."""
    try:
        return path.relative_to(Path(workspace_root).resolve()).as_posix() or "."
    except ValueError:
        return str(path)
