"""How much two models agree on one image: F1 of their boxes matched one to one at IoU >= 0.5, same class (by
name when the class names are given: a challenger may order its classes otherwise).

Numpy only (the server never imports torch for an ONNX model). Greedy matching by decreasing score, as the
confusion matrix matches; the score threshold is the one both predictors already decoded with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detops.inference.predictor import Detections


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] IoU of xyxy boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), dtype=np.float64)
    a, b = a.astype(np.float64), b.astype(np.float64)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def matched_pairs(reference: Detections, other: Detections, iou: float = 0.5,
                  names: tuple[Sequence[str], Sequence[str]] | None = None) -> int:
    """How many boxes of `other` (by decreasing score) find a still unmatched `reference` box of their class with
    IoU >= `iou` (the best such one); `names`: the class names of `reference` and of `other`, by index."""
    ious = iou_matrix(other.boxes, reference.boxes)
    ref_classes, other_classes = reference.labels, other.labels
    if names is not None:
        ref_classes = np.asarray(names[0], dtype=object)[reference.labels.astype(int)]
        other_classes = np.asarray(names[1], dtype=object)[other.labels.astype(int)]
    same_class = np.asarray(other_classes)[:, None] == np.asarray(ref_classes)[None, :]
    ious = np.where(same_class, ious, 0.0)
    taken = np.zeros(len(reference), dtype=bool)
    matches = 0
    for i in np.argsort(-other.scores, kind="stable"):
        candidates = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(candidates)) if len(candidates) else -1
        if j >= 0 and candidates[j] >= iou:
            taken[j] = True
            matches += 1
    return matches


def agreement(champion: Detections, challenger: Detections, iou: float = 0.5,
              names: tuple[Sequence[str], Sequence[str]] | None = None) -> float:
    """F1 of the matched boxes: 1 when both find the same boxes (or both find none), 0 when no box matches."""
    total = len(champion) + len(challenger)
    if total == 0:
        return 1.0
    return 2.0 * matched_pairs(champion, challenger, iou, names) / total
