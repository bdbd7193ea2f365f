"""cleanlab's object-detection label quality (ObjectLab), per image, with the issue type it most likely has.

The score is cleanlab's own: the per-box overlooked, swap and bad-location scores
(`cleanlab.object_detection.rank.compute_*_box_scores`), pooled per image by `pool_box_scores_per_image` and
combined as `get_label_quality_scores` combines them (a weighted geometric mean with cleanlab's weights). It is
computed from those public pieces rather than by `get_label_quality_scores` itself for one reason: that function
fixes the score at which a detection counts as confident to 0.95, and this detector's scores almost never reach it,
so overlooked objects and swapped classes would never show. With `confident=0.95, plausible=0.5` the result is
exactly `get_label_quality_scores` (a test checks it). The issue type is the sub-score that is lowest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ISSUES = ("overlooked", "swap", "badloc")  # cleanlab's names: a missed object, a wrong class, a box off its object
NO_ISSUE = "none"


@dataclass(frozen=True)
class LabelBoxes:
    """One image's labels: xyxy boxes [L, 4] and contiguous class indices [L]."""

    boxes: np.ndarray
    classes: np.ndarray

    def to_cleanlab(self) -> dict[str, Any]:
        return {"bboxes": np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4),
                "labels": np.asarray(self.classes, dtype=np.int64).reshape(-1)}


def per_class(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Detections as cleanlab wants them: one [M, 5] array (x1, y1, x2, y2, score) per class."""
    rows = np.concatenate([np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                           np.asarray(scores, dtype=np.float64).reshape(-1, 1)], axis=1)
    classes = np.asarray(classes).reshape(-1)
    return [rows[classes == k] for k in range(num_classes)]


@dataclass(frozen=True)
class Quality:
    """Per image: the label quality (0 bad .. 1 clean), each issue's pooled score, and the likeliest issue."""

    scores: np.ndarray
    issue_scores: dict[str, np.ndarray]

    def issue(self, index: int, threshold: float) -> str:
        """The lowest sub-score's issue when the image's quality is below `threshold`, else `none`."""
        if self.scores[index] >= threshold:
            return NO_ISSUE
        return min(ISSUES, key=lambda name: float(self.issue_scores[name][index]))


def label_quality(labels: list[LabelBoxes], predictions: list[list[np.ndarray]], confident: float = 0.95,
                  plausible: float = 0.5) -> Quality:
    """cleanlab's label quality of every image; `confident` and `plausible` are its high and low probability
    thresholds (see the module's docstring)."""
    from cleanlab.internal.constants import (
        CUSTOM_SCORE_WEIGHT_BADLOC,
        CUSTOM_SCORE_WEIGHT_OVERLOOKED,
        CUSTOM_SCORE_WEIGHT_SWAP,
        TINY_VALUE,
    )
    from cleanlab.object_detection.rank import (
        compute_badloc_box_scores,
        compute_overlooked_box_scores,
        compute_swap_box_scores,
        pool_box_scores_per_image,
    )

    given = [label.to_cleanlab() for label in labels]
    per_box = {
        "overlooked": compute_overlooked_box_scores(labels=given, predictions=predictions,
                                                    high_probability_threshold=confident),
        "swap": compute_swap_box_scores(labels=given, predictions=predictions, high_probability_threshold=confident),
        "badloc": compute_badloc_box_scores(labels=given, predictions=predictions,
                                            low_probability_threshold=plausible),
    }
    pooled = {name: pool_box_scores_per_image(scores) for name, scores in per_box.items()}
    weights = {"overlooked": CUSTOM_SCORE_WEIGHT_OVERLOOKED, "swap": CUSTOM_SCORE_WEIGHT_SWAP,
               "badloc": CUSTOM_SCORE_WEIGHT_BADLOC}
    log_score = sum(weights[name] * np.log(TINY_VALUE + pooled[name]) for name in ISSUES)
    return Quality(np.exp(np.asarray(log_score, dtype=np.float64)), pooled)
