"""Checks on the split files before any training starts: each failure names the split, class and fix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from detops.dataset.canonical import Dataset
from detops.errors import TrainingError
from detops.training.data import ClassMap


def _box_counts(dataset: Dataset) -> Counter[int]:
    return Counter(int(a["category_id"]) for a in dataset["annotations"] if not a.get("iscrowd"))


def check_splits(train: Dataset, val: Dataset, others: dict[str, Dataset], paths: dict[str, Path]) -> ClassMap:
    """Classes of the model (train's categories, sorted by id), after refusing splits it cannot learn from.

    `others` are further splits (test) whose classes must also be learnable from train.
    """
    if not train["images"]:
        raise TrainingError(
            f"{paths['train']}: the train split has no images. Check split.train and re-run `detops split`."
        )
    if not train["annotations"]:
        raise TrainingError(
            f"{paths['train']}: the train split has {len(train['images'])} images but no boxes; nothing to learn."
        )
    if not val["images"]:
        raise TrainingError(
            f"{paths['val']}: the val split is empty; val/map selects the best checkpoint. Set split.val > 0 "
            "and re-run `detops split`."
        )
    classes = ClassMap.from_dataset(train)
    names = dict(zip(classes.ids, classes.names, strict=True))
    trained = _box_counts(train)
    for split, dataset in {"val": val, **others}.items():
        for cat_id, count in sorted(_box_counts(dataset).items()):
            if cat_id not in names:
                raise TrainingError(
                    f"{paths[split]}: category id {cat_id} ({count} boxes) is not among train's categories "
                    f"{sorted(names)}. Re-run `detops split` so all splits share one category list."
                )
            if not trained[cat_id]:
                raise TrainingError(
                    f"category {names[cat_id]!r} (id {cat_id}) has {count} boxes in {split} "
                    f"({paths[split]}) but none in train: the model cannot learn it. Re-run `detops split` "
                    "(stratified by class) or add training images of it."
                )
    return classes
