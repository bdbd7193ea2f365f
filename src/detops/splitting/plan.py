"""Decide every image's split: groups first, then pinned images, then stratify the rest.

Precedence, strongest first:
1. An image in the previous assignments (`split.stable`) keeps its split; removing images therefore
   never moves another one.
2. With `split.respect_source_splits`, an image with a `source_split` keeps it.
3. An unpinned image in a group that holds pinned images joins them (group integrity beats
   stratification); when the pinned images of one group disagree, they keep their own splits, the
   others join the split holding most of them, and the group is reported as spanning splits.
4. Every other group is placed by grouped iterative stratification (see `stratify`), starting from
   what the pinned images already put into each split.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from detops.config.split import SplitParams
from detops.dataset.canonical import SPLITS, Dataset
from detops.errors import DataError
from detops.splitting.dedup import near_duplicate_pairs
from detops.splitting.groups import connected_groups, rule_keys, same_key_pairs
from detops.splitting.labels import box_counts, label_matrix
from detops.splitting.stability import PreviousAssignments
from detops.splitting.stratify import iterative_stratification

# Why each image is where it is (counted in the report).
KEPT, SOURCE, JOINED, STRATIFIED = "previous", "source_split", "joined_group", "stratified"


@dataclass
class SplitPlan:
    """Per image (dataset order): split name, group index, and why it went there."""

    splits: list[str]
    groups: np.ndarray
    origins: list[str]
    near_duplicate_pairs: int
    spanning_groups: list[list[str]]  # file names of each group whose images ended in several splits


def _check_names(dataset: Dataset) -> None:
    seen: dict[str, int] = {}
    for im in dataset["images"]:
        if im["file_name"] in seen:
            raise DataError(
                f"images {seen[im['file_name']]} and {im['id']} share file_name {im['file_name']!r}; split "
                "assignments are keyed by file name, so each image needs its own. Re-run `detops validate`."
            )
        seen[im["file_name"]] = im["id"]


def _pins(dataset: Dataset, params: SplitParams, previous: PreviousAssignments | None) -> list[tuple[str, str] | None]:
    """(split, origin) of each image that must not move, None for images free to place."""
    pins: list[tuple[str, str] | None] = []
    for im in dataset["images"]:
        kept = previous.split_of(im["file_name"], im.get("sha1")) if previous and params.stable else None
        source = im.get("source_split") if params.respect_source_splits else None
        if kept:
            pins.append((kept, KEPT))
        elif source:
            if source not in SPLITS:
                raise DataError(
                    f"image {im['id']} ({im['file_name']}): source_split {source!r} is not one of {SPLITS}; "
                    "re-import the dataset or set split.respect_source_splits=false."
                )
            pins.append((source, SOURCE))
        else:
            pins.append(None)
    return pins


def plan_split(
    dataset: Dataset, params: SplitParams, codes: np.ndarray | None, previous: PreviousAssignments | None
) -> SplitPlan:
    """Assign every image of `dataset`; `codes` are its (n, 2) hashes when `params.dedup` is on."""
    images = dataset["images"]
    if not images:
        raise DataError("the dataset has no images to split; import a dataset with at least one image.")
    _check_names(dataset)
    pairs = [same_key_pairs(rule_keys(images, rule)) for rule in params.group_by]
    duplicates = np.empty((0, 2), dtype=np.int64)
    if params.dedup and codes is not None:
        duplicates = near_duplicate_pairs(codes, params.hash_max_distance, params.hash_mirrored)
        pairs.append(duplicates)
    groups = connected_groups(len(images), pairs)

    pins = _pins(dataset, params, previous)
    splits: list[str | None] = [pin[0] if pin else None for pin in pins]
    origins: list[str | None] = [pin[1] if pin else None for pin in pins]
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(int(group), []).append(index)
    free_groups = []
    for group, indices in members.items():
        pinned = Counter(splits[i] for i in indices if splits[i])
        if not pinned:
            free_groups.append(group)
            continue
        # Most pinned images; ties by split order, so the choice does not depend on image order.
        joined = min(pinned, key=lambda s: (-pinned[s], SPLITS.index(s)))
        for i in indices:
            if splits[i] is None:
                splits[i], origins[i] = joined, JOINED

    labels = label_matrix(box_counts(dataset), params.box_count_bins)
    fixed_split = np.array([SPLITS.index(s) if s else -1 for s in splits])
    placed_labels = np.stack([labels[fixed_split == k].sum(0) for k in range(len(SPLITS))])
    placed_sizes = np.array([(fixed_split == k).sum() for k in range(len(SPLITS))])
    group_labels = np.zeros((len(free_groups), labels.shape[1]), dtype=np.int64)
    group_sizes = np.zeros(len(free_groups), dtype=np.int64)
    for row, group in enumerate(free_groups):
        group_labels[row] = labels[members[group]].sum(0)
        group_sizes[row] = len(members[group])
    chosen = iterative_stratification(
        group_labels, group_sizes, np.array(params.ratios()), params.seed, placed_labels, placed_sizes
    )
    for group, split_index in zip(free_groups, chosen, strict=True):
        for i in members[group]:
            splits[i], origins[i] = SPLITS[split_index], STRATIFIED

    final = [str(s) for s in splits]
    _check_not_empty(final, params, n_groups=len(members))
    spanning = [
        sorted(images[i]["file_name"] for i in indices)
        for indices in members.values()
        if len({final[i] for i in indices}) > 1
    ]
    return SplitPlan(final, groups, [str(o) for o in origins], len(duplicates), spanning)


def _check_not_empty(splits: list[str], params: SplitParams, n_groups: int) -> None:
    """A split with a positive ratio that got no image would fail training later: say why now."""
    counts = Counter(splits)
    for name, ratio in zip(SPLITS, params.ratios(), strict=True):
        if ratio > 0 and counts[name] == 0:
            raise DataError(
                f"split {name!r} (ratio {ratio:g}) got no images: the {len(splits)} images form only {n_groups} "
                "group(s) kept together (near-duplicates, group_by, pinned splits). Add images, lower "
                f"split.hash_max_distance or loosen split.group_by, or set split.{name}=0."
            )
