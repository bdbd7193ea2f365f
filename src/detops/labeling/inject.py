"""Known label errors, injected into a copy of a dataset, to measure the audit (its tests, benchmarks/label_loop.py):
an audit is only as good as the share of planted errors it puts on top of its list."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from detops.dataset.canonical import Dataset

KINDS = ("overlooked", "swap", "badloc")  # a box removed, a box's class changed, a box shifted off its object
SHIFT = 0.5  # of the box's width and height: IoU with the true box falls to about 0.14-0.33


def inject_errors(dataset: Dataset, share: float, seed: int) -> tuple[Dataset, dict[int, str]]:
    """A copy of `dataset` where `share` of the images with a box get one error of each kind (disjoint images),
    and image id -> kind. Each error hits the image's largest box, so it is one a labeller would have seen."""
    out = copy.deepcopy(dataset)
    rng = np.random.default_rng(seed)
    boxes: dict[int, list[dict[str, Any]]] = {}
    for ann in out["annotations"]:
        boxes.setdefault(int(ann["image_id"]), []).append(ann)
    candidates = sorted(boxes)
    classes = [int(c["id"]) for c in out["categories"]]
    used = KINDS if len(classes) > 1 else tuple(k for k in KINDS if k != "swap")  # one class: nothing to swap to
    count = max(1, round(share * len(out["images"])))
    chosen = rng.permutation(candidates)[: count * len(used)]
    kinds: dict[int, str] = {}
    removed: set[int] = set()
    for n, image_id in enumerate(int(i) for i in chosen):
        kind = used[n % len(used)]
        target = max(boxes[image_id], key=lambda a: float(a["bbox"][2]) * float(a["bbox"][3]))
        if kind == "overlooked":
            removed.add(int(target["id"]))
        elif kind == "swap":
            target["category_id"] = int(rng.choice([c for c in classes if c != int(target["category_id"])]))
        else:
            x, y, w, h = (float(v) for v in target["bbox"])
            image = next(im for im in out["images"] if int(im["id"]) == image_id)
            dx = SHIFT * w * (1 if x + w * (1 + SHIFT) <= float(image["width"]) else -1)
            dy = SHIFT * h * (1 if y + h * (1 + SHIFT) <= float(image["height"]) else -1)
            target["bbox"] = [min(max(0.0, x + dx), float(image["width"]) - w),
                              min(max(0.0, y + dy), float(image["height"]) - h), w, h]
        kinds[image_id] = kind
    out["annotations"] = [a for a in out["annotations"] if int(a["id"]) not in removed]
    return out, kinds
