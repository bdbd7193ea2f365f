"""The promotion gate as a pure function: same inputs, same decision, testable on every edge without MLflow.

Rule: promote iff `candidate >= champion + min_improvement` on `metric` and `candidate >= min_metric`. With no
champion, or a champion the scorer could not score on today's split (trained on a different class set: its score
is not comparable), the floor alone decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from detops.errors import PromotionError

# Scores equal to the threshold up to float rounding (0.5 + 0.005 is not exactly 0.505) count as reaching it.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    """What the gate decided and every number it used, so the decision can be reported and audited."""

    promote: bool
    reason: str
    metric: str
    candidate_value: float
    champion_value: float | None  # None: no champion, or one whose score is not comparable
    threshold: float  # what the candidate had to reach
    min_improvement: float
    min_metric: float
    has_champion: bool
    comparable: bool  # False: no champion, or a champion with a different class set
    overlap: int | None  # current test images that were in the champion's training split (None: unknown)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_text(value: float | None) -> str:
    """A metric as reports print it: 4 decimals, or '-' where there is none (no champion)."""
    return "-" if value is None else f"{value:.4f}"


def metric_value(metrics: Mapping[str, float | None], metric: str, whose: str) -> float:
    """`metrics[metric]` as a finite float, or a PromotionError naming the metric and what is available."""
    if metric not in metrics:
        available = ", ".join(sorted(metrics)) or "none"
        raise PromotionError(
            f"metric {metric!r} is not among the {whose}'s metrics (available: {available});"
            " set promote.metric to one of them."
        )
    value = metrics[metric]
    if value is None or not math.isfinite(float(value)):
        raise PromotionError(
            f"the {whose} has no usable value for {metric!r} (got {value!r}); the evaluation produced no score,"
            " so nothing can be compared. Check the test split and re-run evaluate."
        )
    return float(value)


def decide_promotion(
    candidate: Mapping[str, float | None],
    champion: Mapping[str, float | None] | None,
    *,
    metric: str,
    min_improvement: float,
    min_metric: float,
    champion_not_comparable: str | None = None,
    champion_train_overlap: int | None = None,
) -> Decision:
    """Decide whether the candidate replaces the champion; both scored on the same (current) test split.

    `champion_not_comparable` says why the champion has no comparable score (the scorer's class-set check failed);
    the floor alone decides then. A missing or non-finite metric is an error, never a silent pass.
    """
    if min_improvement < 0 or min_metric < 0:
        raise PromotionError(
            f"min_improvement ({min_improvement}) and min_metric ({min_metric}) must be >= 0; fix promote.* params."
        )
    cand = metric_value(candidate, metric, "candidate")
    fields: dict[str, Any] = {
        "metric": metric,
        "candidate_value": cand,
        "min_improvement": min_improvement,
        "min_metric": min_metric,
        "has_champion": champion is not None,
        "overlap": champion_train_overlap,
    }

    if champion is None:
        return _floor_only(cand, min_metric, fields, "no champion yet")

    if champion_not_comparable:
        return _floor_only(cand, min_metric, fields, f"no comparable champion: {champion_not_comparable}")

    champ = metric_value(champion, metric, "champion")
    threshold = max(champ + min_improvement, min_metric)
    promote = cand >= threshold - TOLERANCE
    beats = cand >= champ + min_improvement - TOLERANCE
    if promote:
        reason = (
            f"{metric} {cand:.4f} >= champion {champ:.4f} + min_improvement {min_improvement:g}"
            f" and >= floor {min_metric:g}"
        )
    elif not beats:
        reason = (
            f"{metric} {cand:.4f} < champion {champ:.4f} + min_improvement {min_improvement:g}"
            f" = {champ + min_improvement:.4f}"
        )
    else:
        reason = f"{metric} {cand:.4f} beats the champion but is below the floor promote.min_metric {min_metric:g}"
    if champion_train_overlap:
        reason += f"; {champion_train_overlap} current test image(s) were in the champion's training split"
    return Decision(
        promote=promote, reason=reason, champion_value=champ, threshold=threshold, comparable=True, **fields
    )


def _floor_only(cand: float, min_metric: float, fields: dict[str, Any], why: str) -> Decision:
    promote = cand >= min_metric - TOLERANCE
    verdict = ">=" if promote else "<"
    reason = f"{why}; the floor decides: {fields['metric']} {cand:.4f} {verdict} promote.min_metric {min_metric:g}"
    return Decision(
        promote=promote, reason=reason, champion_value=None, threshold=min_metric, comparable=False, **fields
    )

