"""Label features per image: how many boxes, how large (relative to the image), and which classes.

An image without boxes has a box count of 0 and no box area or class shares (NaN): a share of nothing is
undefined, and a 0 would make a batch of background images look like a shift in every class. The drift tests
leave NaN out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from detops.dataset.canonical import Dataset, category_names

CLASS_PREFIX = "class_"


def class_column(name: str) -> str:
    return f"{CLASS_PREFIX}{name}"


def label_features(dataset: Dataset) -> dict[int, dict[str, float]]:
    """image id -> box_count, box_area (mean box area / image area), class_<name> (share of its boxes)."""
    names = category_names(dataset)
    boxes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in dataset["annotations"]:
        boxes[int(ann["image_id"])].append(ann)
    out: dict[int, dict[str, float]] = {}
    for image in dataset["images"]:
        own = boxes[int(image["id"])]
        area = float(image["width"]) * float(image["height"])
        row = {"box_count": float(len(own)), "box_area": math.nan}
        row |= {class_column(name): math.nan for name in names.values()}
        if own:
            row["box_area"] = sum(float(a["bbox"][2]) * float(a["bbox"][3]) for a in own) / len(own) / area
            for cid, name in names.items():
                row[class_column(name)] = sum(int(a["category_id"]) == cid for a in own) / len(own)
        out[int(image["id"])] = row
    return out
