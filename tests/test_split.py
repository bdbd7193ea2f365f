"""Splitting: grouped iterative stratification, near-duplicate pairs, group rules and the assignments file."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from detops.config import load_params
from detops.config.split import SplitParams
from detops.errors import DataError, ParamsError
from detops.splitting.dedup import near_duplicate_pairs
from detops.splitting.groups import connected_groups, rule_keys, same_key_pairs
from detops.splitting.labels import label_matrix
from detops.splitting.stability import read_assignments
from detops.splitting.stratify import iterative_stratification


def _random_labels(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    """(n, classes) box counts: 0-8 boxes per image, classes drawn with `weights`."""
    counts = np.zeros((n, len(weights)), dtype=np.int64)
    for row in counts:
        for c in rng.choice(len(weights), size=rng.integers(0, 9), p=np.array(weights) / sum(weights)):
            row[c] += 1
    return counts


def _max_share_deviation(counts: np.ndarray, split_of: np.ndarray, n_splits: int = 3) -> float:
    """Largest |class's share of a split's boxes - its share of all boxes|, in percentage points."""
    global_share = counts.sum(0) / counts.sum()
    worst = 0.0
    for k in range(n_splits):
        boxes = counts[split_of == k].sum(0)
        if boxes.sum():
            worst = max(worst, float(np.abs(boxes / boxes.sum() - global_share).max() * 100))
    return worst


def test_stratification_meets_box_shares_and_image_ratios() -> None:
    rng = np.random.default_rng(1)
    counts = _random_labels(rng, 500, [0.45, 0.3, 0.15, 0.07, 0.03])
    labels = label_matrix(counts, [1, 4, 16])
    split_of = iterative_stratification(labels, np.ones(500), np.array([0.7, 0.2, 0.1]), seed=0)
    assert _max_share_deviation(counts, split_of) < 2.0
    images = np.bincount(split_of, minlength=3) / 500
    np.testing.assert_allclose(images, [0.7, 0.2, 0.1], atol=0.01)
    # Every class (even the rarest, ~3 % of boxes) reaches val and test.
    for k in (1, 2):
        assert (counts[split_of == k].sum(0) > 0).all()


def test_stratification_beats_a_random_split() -> None:
    rng = np.random.default_rng(2)
    counts = _random_labels(rng, 300, [0.5, 0.3, 0.15, 0.05])
    labels = label_matrix(counts, [1, 4, 16])
    stratified = iterative_stratification(labels, np.ones(300), np.array([0.7, 0.2, 0.1]), seed=0)
    shuffled = rng.permutation(np.repeat([0, 1, 2], [210, 60, 30]))
    assert _max_share_deviation(counts, stratified) < _max_share_deviation(counts, shuffled)


def test_stratification_is_seeded_and_deterministic() -> None:
    counts = _random_labels(np.random.default_rng(3), 200, [0.6, 0.3, 0.1])
    labels = label_matrix(counts, [1, 4])
    runs = [iterative_stratification(labels, np.ones(200), np.array([0.6, 0.2, 0.2]), seed=s) for s in (5, 5, 6)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_groups_are_units_weighted_by_their_size() -> None:
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 6, size=120)
    labels = np.stack([_random_labels(rng, int(s), [0.6, 0.4]).sum(0) for s in sizes])
    split_of = iterative_stratification(labels, sizes, np.array([0.7, 0.2, 0.1]), seed=0)
    images = np.bincount(split_of, weights=sizes, minlength=3) / sizes.sum()
    np.testing.assert_allclose(images, [0.7, 0.2, 0.1], atol=0.02)


def test_placed_units_count_first_and_new_ones_fill_the_rest() -> None:
    """Train already holds too much of class 0: new class-0 boxes must go to val and test."""
    labels = np.array([[1, 0]] * 30 + [[0, 1]] * 70)
    placed_labels = np.array([[70, 0], [0, 0], [0, 0]])
    placed_sizes = np.array([70, 0, 0])
    split_of = iterative_stratification(labels, np.ones(100), np.array([0.7, 0.2, 0.1]), 0, placed_labels, placed_sizes)
    assert set(split_of[:30]) <= {1, 2}  # class 0 already has its 70 % in train
    held = np.bincount(split_of, minlength=3) + placed_sizes
    np.testing.assert_allclose(held / held.sum(), [0.7, 0.2, 0.1], atol=0.02)


def test_zero_ratio_split_gets_nothing() -> None:
    counts = _random_labels(np.random.default_rng(5), 100, [0.5, 0.5])
    split_of = iterative_stratification(label_matrix(counts, [1]), np.ones(100), np.array([0.8, 0.2, 0.0]), 0)
    assert 2 not in split_of and (split_of == 1).sum() == 20


def test_label_matrix_bins_and_empty() -> None:
    counts = np.array([[0, 0], [1, 0], [2, 2], [10, 6], [3, 0]])
    labels = label_matrix(counts, [1, 4, 16])
    # columns: class 0, class 1, empty, 1-3 boxes, 4-15 boxes, >=16 boxes
    assert labels.tolist() == [
        [0, 0, 1, 0, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [2, 2, 0, 0, 1, 0],
        [10, 6, 0, 0, 0, 1],
        [3, 0, 0, 1, 0, 0],
    ]
    # An edge list not starting at 1 still gives non-empty images a bin below the first edge.
    assert label_matrix(np.array([[2], [7]]), [5])[:, 2:].tolist() == [[1, 0], [0, 1]]


def _brute_force_pairs(codes: np.ndarray, t: int, mirrored: bool) -> set[tuple[int, int]]:
    found = set()
    for i, j in combinations(range(len(codes)), 2):
        options = [(0, 0)] + ([(0, 1), (1, 0), (1, 1)] if mirrored else [])
        if min(bin(int(codes[i, a]) ^ int(codes[j, b])).count("1") for a, b in options) <= t:
            found.add((i, j))
    return found


@pytest.mark.parametrize(("t", "mirrored"), [(0, True), (2, False), (4, True), (9, True)])
def test_multi_index_pairs_match_brute_force(t: int, mirrored: bool) -> None:
    rng = np.random.default_rng(t)
    base = rng.integers(0, 2**63, size=(60, 2), dtype=np.uint64)
    # Plant near-duplicates: copies of earlier codes with a few bits flipped, some on the mirror side.
    for i in range(20, 60):
        src = base[rng.integers(0, 20)]
        flips = rng.choice(64, size=rng.integers(0, 8), replace=False)
        noise = np.uint64(sum(1 << int(b) for b in flips))
        base[i] = [src[0] ^ noise, src[1] ^ noise] if i % 2 else [src[1] ^ noise, src[0] ^ noise]
    got = {tuple(p) for p in near_duplicate_pairs(base, t, mirrored).tolist()}
    assert got == _brute_force_pairs(base, t, mirrored)
    assert got  # the planted copies are found


def test_group_rules_regex_attr_and_roboflow_preset() -> None:
    images = [
        {"file_name": "train/images/IMG_1_jpg.rf.0123456789abcdef0123456789abcdef.jpg", "video": "a"},
        {"file_name": "valid/images/IMG_1_jpg.rf.fedcba9876543210fedcba9876543210.jpg", "video": "b"},
        {"file_name": "frames/clip7_0001.png", "video": "a"},
        {"file_name": "frames/clip7_0002.png", "video": ""},
        {"file_name": "other.png"},
    ]
    assert rule_keys(images, "roboflow") == ["IMG_1_jpg", "IMG_1_jpg", None, None, None]
    assert rule_keys(images, r"(clip\d+)_\d+") == [None, None, "clip7", "clip7", None]
    assert rule_keys(images, r"clip\d+") == [None, None, "clip7", "clip7", None]  # no group: whole match
    assert rule_keys(images, "attr:video") == ["a", "b", "a", None, None]
    pairs = [same_key_pairs(rule_keys(images, r)) for r in ("roboflow", r"(clip\d+)_", "attr:video")]
    groups = connected_groups(len(images), pairs)
    # 0-1 by name, 2-3 by clip, 0-2 by video: one group of four, and the loner.
    assert groups.tolist() == [0, 0, 0, 0, 1]


def test_split_params_are_checked() -> None:
    assert SplitParams(group_by="attr:video").group_by == ["attr:video"]  # type: ignore[arg-type]
    assert SplitParams(group_by="").group_by == []  # type: ignore[arg-type]
    for bad in ({"group_by": ["(unclosed"]}, {"group_by": ["attr:"]}, {"box_count_bins": [4, 4]}):
        with pytest.raises(ParamsError):
            load_params(None, [f"split.{key}={json.dumps(value)}" for key, value in bad.items()])
    with pytest.raises(ParamsError, match="sum to 1"):
        load_params(None, ["split.train=0.8", "split.val=0.3"])


def test_malformed_assignments_file_is_a_data_error(tmp_path) -> None:
    path = tmp_path / "split_assignments.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="delete it"):
        read_assignments(path)
    path.write_text(json.dumps({"format": "detops-split-assignments/1", "images": {"a.png": {"split": "dev"}}}))
    with pytest.raises(DataError, match="'dev'"):
        read_assignments(path)
    assert read_assignments(tmp_path / "absent.json") is None
