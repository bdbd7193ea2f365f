"""The promotion gate on its edges: a worse model can never pass, a missing metric is never a silent pass."""

from __future__ import annotations

from typing import Any

import pytest

from detops.errors import DetopsError, PromotionError
from detops.registry.decision import Decision, decide_promotion

M = "test/map"


def gate(
    cand: float, champ: float | None, *, min_improvement: float = 0.005, min_metric: float = 0.0, **kw: Any
) -> Decision:
    return decide_promotion(
        {M: cand, "test/map_50": 0.9},
        None if champ is None else {M: champ},
        metric=M,
        min_improvement=min_improvement,
        min_metric=min_metric,
        **kw,
    )


def test_better_by_more_than_the_margin_is_promoted() -> None:
    d = gate(0.60, 0.50)
    assert d.promote and d.comparable and d.has_champion
    assert d.champion_value == 0.50 and d.candidate_value == 0.60
    assert d.threshold == pytest.approx(0.505)


def test_better_by_less_than_the_margin_is_not() -> None:
    d = gate(0.503, 0.50)
    assert not d.promote
    assert "< champion 0.5000 + min_improvement 0.005" in d.reason


def test_equal_scores_promote_only_with_zero_margin() -> None:
    assert gate(0.5, 0.5, min_improvement=0.0).promote
    assert not gate(0.5, 0.5, min_improvement=0.005).promote


def test_exactly_at_the_threshold_is_promoted_despite_float_rounding() -> None:
    assert gate(0.505, 0.5, min_improvement=0.005).promote
    assert gate(0.3, 0.1, min_improvement=0.2).promote  # 0.1 + 0.2 > 0.3 in floats
    assert not gate(0.505 - 1e-6, 0.5, min_improvement=0.005).promote


def test_no_champion_the_floor_decides() -> None:
    passed = gate(0.30, None, min_metric=0.25)
    assert passed.promote and not passed.has_champion and passed.champion_value is None
    assert passed.threshold == 0.25 and "no champion yet" in passed.reason
    failed = gate(0.20, None, min_metric=0.25)
    assert not failed.promote and "0.2000 < promote.min_metric 0.25" in failed.reason
    assert gate(0.25, None, min_metric=0.25).promote  # exactly at the floor


def test_floor_failure_blocks_even_a_better_model() -> None:
    d = gate(0.20, 0.10, min_metric=0.25)
    assert not d.promote and d.comparable
    assert d.threshold == 0.25
    assert "below the floor" in d.reason


def test_a_champion_not_comparable_leaves_the_floor_to_decide() -> None:
    why = "champion version 1 was trained on other classes (new in the split: bird (id 3); missing from the split:"\
          " fox (id 4))"
    d = gate(0.30, 0.90, champion_not_comparable=why)
    assert d.promote, "the floor decides, the incomparable champion's higher score does not block"
    assert not d.comparable and d.has_champion and d.champion_value is None
    assert d.reason.startswith(f"no comparable champion: {why}; the floor decides")
    assert not gate(0.30, 0.90, min_metric=0.5, champion_not_comparable=why).promote


def test_unknown_metric_is_a_clear_error() -> None:
    with pytest.raises(PromotionError, match=r"'test/mAP' is not among the candidate's metrics") as info:
        decide_promotion({M: 0.5, "test/map_50": 0.7}, None, metric="test/mAP", min_improvement=0, min_metric=0)
    assert "test/map, test/map_50" in str(info.value)
    assert isinstance(info.value, DetopsError)


def test_metric_missing_from_the_champion_fails_closed() -> None:
    with pytest.raises(PromotionError, match="champion"):
        decide_promotion({M: 0.5}, {"test/map_50": 0.5}, metric=M, min_improvement=0, min_metric=0)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_a_missing_score_is_an_error_not_a_pass(bad: float | None) -> None:
    with pytest.raises(PromotionError, match="no usable value"):
        decide_promotion({M: bad}, None, metric=M, min_improvement=0, min_metric=0)


def test_overlap_is_reported() -> None:
    d = gate(0.6, 0.5, champion_train_overlap=7)
    assert d.overlap == 7 and "7 current test image(s)" in d.reason


def test_to_dict_has_every_number() -> None:
    d = gate(0.6, 0.5).to_dict()
    assert {"promote", "reason", "candidate_value", "champion_value", "threshold", "comparable", "overlap"} <= set(d)


def test_decision_is_frozen() -> None:
    d = gate(0.6, 0.5)
    with pytest.raises(AttributeError):
        d.promote = False  # type: ignore[misc, unused-ignore]
