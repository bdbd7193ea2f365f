"""What the stratification balances, per image: boxes per class, `empty`, and boxes-per-image bins.

Classes are counted in boxes, not presence, because the split report judges each class's share of
boxes; images are also binned by how many boxes they hold, so crowded and sparse images spread
evenly, and an image without boxes carries the `empty` label so it is stratified too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detops.dataset.canonical import Dataset
from detops.errors import DataError


def box_counts(dataset: Dataset) -> np.ndarray:
    """(images, classes) number of boxes of each category (in `categories` order) in each image."""
    row = {im["id"]: i for i, im in enumerate(dataset["images"])}
    column = {c["id"]: j for j, c in enumerate(dataset["categories"])}
    counts = np.zeros((len(row), len(column)), dtype=np.int64)
    for ann in dataset["annotations"]:
        if ann["image_id"] not in row or ann["category_id"] not in column:
            raise DataError(
                f"annotation {ann.get('id')}: image_id {ann['image_id']} or category_id {ann['category_id']} "
                "is not in the dataset; re-run `detops validate`."
            )
        counts[row[ann["image_id"]], column[ann["category_id"]]] += 1
    return counts


def _bin_floors(edges: Sequence[int]) -> np.ndarray:
    """Lowest box count of each bin of non-empty images: 1 and every edge above it."""
    return np.array(sorted({1, *edges}), dtype=np.int64)


def label_matrix(counts: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """(images, labels) stratification labels: boxes per class, then `empty`, then box-count bins.

    A non-empty image falls in the bin of the highest edge <= its box count (edges [1, 4, 16]: bins
    1-3, 4-15, >=16 boxes; edges [5]: 1-4, >=5).
    """
    total = counts.sum(1)
    floors = _bin_floors(edges)
    bins = np.zeros((len(counts), len(floors)), dtype=np.int64)
    non_empty = np.flatnonzero(total > 0)
    bins[non_empty, np.searchsorted(floors, total[non_empty], side="right") - 1] = 1
    empty = (total == 0).astype(np.int64)[:, None]
    return np.hstack([counts, empty, bins])
