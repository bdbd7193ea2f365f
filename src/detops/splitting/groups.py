"""Groups of images that must share a split: near-duplicates and `group_by` rules, joined transitively.

Every source of "these belong together" yields pairs of image indices; the groups are the connected
components of the graph of all pairs (union-find, done by scipy's connected_components).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from detops.config.split import ATTR_PREFIX, GROUP_BY_PRESETS


def rule_keys(images: Sequence[dict[str, Any]], rule: str) -> list[str | None]:
    """Each image's group key under one `group_by` rule; None where the rule does not apply."""
    if rule.startswith(ATTR_PREFIX):
        name = rule[len(ATTR_PREFIX) :]
        return [None if im.get(name) in (None, "") else str(im[name]) for im in images]
    pattern = re.compile(GROUP_BY_PRESETS.get(rule, rule))
    keys: list[str | None] = []
    for im in images:
        match = pattern.search(im["file_name"])
        keys.append(None if match is None else (match.group(1) if pattern.groups else match.group(0)))
    return keys


def same_key_pairs(keys: Sequence[str | None]) -> np.ndarray:
    """Pairs chaining together the images that share a key (a path through each key's images suffices)."""
    last_with_key: dict[str, int] = {}
    pairs = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        if key in last_with_key:
            pairs.append((last_with_key[key], index))
        last_with_key[key] = index
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def connected_groups(n: int, pairs: Sequence[np.ndarray]) -> np.ndarray:
    """Group index per image (0..g-1, numbered by each group's first image) from any number of pair lists."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate(
        [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in pairs] or [np.empty((0, 2), np.int64)]
    )
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # Renumber by first appearance so the numbering depends only on image order, not on scipy.
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return np.asarray(rank[labels], dtype=np.int64)
