"""How much two models agree on one image: F1 of their boxes matched one to one at IoU >= 0.5, same class (by
name when the class names are given: a challenger may order its classes otherwise).

Numpy only (the server never imports torch for an ONNX model). Greedy matching by decreasing score, as the
confusion matrix matches; the score threshold is the one both predictors already decoded with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detops.inference.decode import iou_matrix
from detops.inference.predictor import Detections


def agreement(champion: Detections, challenger: Detections, iou: float = 0.5,
              names: tuple[Sequence[str], Sequence[str]] | None = None) -> float:
    """F1 of the boxes matched one to one: each challenger box (by decreasing score) takes the still unmatched
    champion box of its class with the highest IoU >= `iou`. 1 when both find the same boxes (or both none), 0 when
    none match. `names`: the class names of champion and challenger, by index."""
    total = len(champion) + len(challenger)
    if total == 0:
        return 1.0
    classes = [champion.labels, challenger.labels]
    if names is not None:
        classes = [np.asarray(n, dtype=object)[c.astype(int)] for n, c in zip(names, classes, strict=True)]
    same_class = np.asarray(classes[1])[:, None] == np.asarray(classes[0])[None, :]
    ious = np.where(same_class, iou_matrix(challenger.boxes, champion.boxes), 0.0)
    taken = np.zeros(len(champion), dtype=bool)
    for i in np.argsort(-challenger.scores, kind="stable"):
        candidates = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(candidates)) if len(candidates) else -1
        if j >= 0 and candidates[j] >= iou:
            taken[j] = True
    return 2.0 * float(taken.sum()) / total
