"""The split report (`reports/split.json`): how balanced, how grouped and how stable the split is.

"Share" is a class's fraction of the boxes in a split: share(c, s) = boxes of c in s / all boxes in s.
Its deviation is share(c, s) - share(c, whole dataset), in percentage points; the acceptance bound is
|deviation| <= 5 pp for every class and every split that holds boxes. This is the class mix a model
sees when it trains or is scored on that split. "Allocation" is the other reading, the fraction of a
class's boxes that land in each split, compared with the split's ratio; it is reported too, but for
a class with a handful of boxes it cannot be close (3 boxes cannot be cut 70/20/10).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from detops.config.split import SplitParams
from detops.dataset.canonical import SPLITS, Dataset
from detops.splitting.labels import box_counts
from detops.splitting.plan import JOINED, KEPT, SOURCE, STRATIFIED, SplitPlan

SHARE_DEFINITION = (
    "share_pct[c][s] = 100 * boxes of class c in split s / all boxes in s; deviation_pp = share in s - share "
    "in the whole dataset; allocation_pct[c][s] = 100 * boxes of c in s / all boxes of c, vs the split ratio."
)


def _pct(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 3) if whole else None


def _deviation(share: float | None, global_share: float | None) -> float | None:
    return None if share is None or global_share is None else round(share - global_share, 3)


def split_report(dataset: Dataset, plan: SplitPlan, params: SplitParams, removed: int) -> dict[str, Any]:
    """Per-class box counts, shares and deviations per split, group sizes and stability counts."""
    counts = box_counts(dataset)
    split_index = np.array([SPLITS.index(s) for s in plan.splits])
    per_split = np.stack([counts[split_index == k].sum(0) for k in range(len(SPLITS))])  # (S, C)
    images_with = np.stack([(counts[split_index == k] > 0).sum(0) for k in range(len(SPLITS))])
    split_boxes = per_split.sum(1)
    class_totals = per_split.sum(0)
    all_boxes = int(class_totals.sum())

    classes: dict[str, Any] = {}
    worst: tuple[float, str | None, str | None] = (0.0, None, None)
    for j, category in enumerate(dataset["categories"]):
        global_share = _pct(class_totals[j], all_boxes)
        shares = {s: _pct(per_split[k, j], split_boxes[k]) for k, s in enumerate(SPLITS)}
        deviations = {s: _deviation(shares[s], global_share) for s in SPLITS}
        for s, dev in deviations.items():
            if dev is not None and abs(dev) > abs(worst[0]):
                worst = (dev, str(category["name"]), s)
        classes[str(category["name"])] = {
            "boxes": {**{s: int(per_split[k, j]) for k, s in enumerate(SPLITS)}, "total": int(class_totals[j])},
            "images": {s: int(images_with[k, j]) for k, s in enumerate(SPLITS)},
            "share_pct": {"global": global_share, **shares},
            "deviation_pp": deviations,
            "allocation_pct": {s: _pct(per_split[k, j], class_totals[j]) for k, s in enumerate(SPLITS)},
        }
    ratios = dict(zip(SPLITS, params.ratios(), strict=True))
    allocation_gaps = [
        abs(info["allocation_pct"][s] - 100 * ratios[s])
        for info in classes.values()
        for s in SPLITS
        if info["allocation_pct"][s] is not None
    ]

    n_images = len(plan.splits)
    image_counts = Counter(plan.splits)
    group_sizes = np.bincount(plan.groups)
    largest = int(group_sizes.argmax())
    origins = Counter(plan.origins)
    return {
        "share_definition": SHARE_DEFINITION,
        "ratios": ratios,
        "images": {**{s: image_counts[s] for s in SPLITS}, "total": n_images},
        "image_share_pct": {s: _pct(image_counts[s], n_images) for s in SPLITS},
        "boxes": {**{s: int(split_boxes[k]) for k, s in enumerate(SPLITS)}, "total": all_boxes},
        "max_share_deviation_pp": round(abs(worst[0]), 3),
        "max_share_deviation_at": {"class": worst[1], "split": worst[2]},
        "max_allocation_deviation_pp": round(max(allocation_gaps), 3) if allocation_gaps else None,
        "classes": classes,
        "groups": {
            "count": len(group_sizes),
            "multi_image": int((group_sizes > 1).sum()),
            "images_in_multi_image_groups": int(group_sizes[group_sizes > 1].sum()),
            "largest": int(group_sizes[largest]),
            "largest_first_image": dataset["images"][int(np.flatnonzero(plan.groups == largest)[0])]["file_name"],
            "near_duplicate_pairs": plan.near_duplicate_pairs,
            "spanning_splits": len(plan.spanning_groups),
        },
        "assignment": {
            "kept_from_previous": origins[KEPT],
            "from_source_split": origins[SOURCE],
            "joined_pinned_group": origins[JOINED],
            "newly_stratified": origins[STRATIFIED],
            "removed_since_previous": removed,
        },
    }
