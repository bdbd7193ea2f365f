"""COCO metrics: our evaluator (shared torchmetrics metric) must equal pycocotools' COCOeval exactly."""

from __future__ import annotations

import contextlib
import copy
import io
import random
from typing import Any

import pytest

from detops.errors import DataError
from detops.evaluation.metrics import SUMMARY_KEYS, coco_metrics, compute_coco, metric_class_names

CATEGORIES = (1, 3, 7, 12)  # non-contiguous ids; 12 never has ground truth
NO_TRUTH = 12


def random_case(seed: int, n_images: int = 24) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GT with small/medium/large boxes (area != box area on purpose), empty images, and predictions:
    jittered GT (some with the wrong class), random boxes, boxes of a class with no GT, random scores."""
    rng = random.Random(seed)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for i in range(n_images):
        width, height = 640, 480
        image_id = 100 + 3 * i
        images.append({"id": image_id, "file_name": f"{i}.jpg", "width": width, "height": height})
        for _ in range(rng.choice([0, 1, 3, 6, 9])):
            side = rng.choice([rng.uniform(4, 30), rng.uniform(34, 94), rng.uniform(100, 300)])
            w, h = round(side * rng.uniform(0.6, 1.4)) + 1, round(side * rng.uniform(0.6, 1.4)) + 1
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            cat = rng.choice(CATEGORIES[:-1])
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h * rng.uniform(0.5, 1.0), "iscrowd": 0})
            if rng.random() < 0.8:
                dets.append({
                    "image_id": image_id,
                    "category_id": cat if rng.random() < 0.85 else rng.choice(CATEGORIES),
                    "bbox": [x + rng.gauss(0, 0.1 * w), y + rng.gauss(0, 0.1 * h),
                             w * rng.uniform(0.7, 1.3), h * rng.uniform(0.7, 1.3)],
                    "score": rng.random(),
                })
        for _ in range(rng.randint(0, 4)):
            w, h = rng.uniform(5, 200), rng.uniform(5, 200)
            dets.append({"image_id": image_id, "category_id": rng.choice(CATEGORIES),
                         "bbox": [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h],
                         "score": rng.random()})
    categories = [{"id": c, "name": f"class {c}", "supercategory": ""} for c in CATEGORIES]
    return {"info": {}, "images": images, "annotations": anns, "categories": categories}, dets


def cocoeval(gt: dict[str, Any], dets: list[dict[str, Any]]) -> Any:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def per_class_ap(evaluator: Any) -> dict[int, float | None]:
    """AP@[.5:.95] per class from COCOeval's precision array, the way summarize() averages it."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    out: dict[int, float | None] = {}
    for k, class_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        out[class_id] = float(values[values > -1].mean()) if (values > -1).any() else None
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_cocoeval_on_random_predictions(seed: int) -> None:
    gt, dets = random_case(seed)
    assert {a["category_id"] for a in gt["annotations"]} == set(CATEGORIES) - {NO_TRUTH}
    result = compute_coco(gt, dets)
    reference = cocoeval(gt, dets)

    for key, expected in zip(SUMMARY_KEYS, reference.stats, strict=True):
        got = result.summary[key]
        if expected < 0:
            assert got is None, key
        else:
            assert got == pytest.approx(expected, abs=1e-6), key
    assert result.summary["map"] is not None and 0.05 < result.summary["map"] < 0.95  # a non-trivial case
    expected_ap = per_class_ap(reference)
    assert set(expected_ap) == set(CATEGORIES)
    for class_id, expected in expected_ap.items():
        if expected is None:
            assert result.ap.get(class_id) is None
        else:
            assert result.ap[class_id] == pytest.approx(expected, abs=1e-6), class_id
    # AP50 and the PR curves come from the same precision array as COCOeval's.
    precision50 = reference.eval["precision"][0, :, :, 0, -1]
    for k, class_id in enumerate(reference.params.catIds):
        if class_id == NO_TRUTH:
            assert class_id not in result.pr_curves and result.ap50[class_id] is None
        else:
            assert result.pr_curves[class_id] == pytest.approx(precision50[:, k].tolist(), abs=1e-9)
            assert result.ap50[class_id] == pytest.approx(float(precision50[:, k].mean()), abs=1e-6)


def test_flat_metric_names_and_null_for_class_without_truth() -> None:
    gt, dets = random_case(3)
    metrics = coco_metrics(gt, dets, prefix="test")
    for key in ("test/map", "test/map_50", "test/map_75", "test/mar_1", "test/mar_10", "test/mar_100"):
        assert isinstance(metrics[key], float)
    assert {k for k in metrics if k.startswith("test/ap/")} == {f"test/ap/class {c}" for c in CATEGORIES}
    assert any(d["category_id"] == NO_TRUTH for d in dets)  # predicted, yet no ground truth
    assert metrics[f"test/ap/class {NO_TRUTH}"] is None
    assert all(v is None or 0.0 <= v <= 1.0 for v in metrics.values())


def test_perfect_predictions_score_one() -> None:
    gt, _ = random_case(4)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in gt["annotations"]]
    metrics = coco_metrics(gt, perfect, prefix="val")
    for key in ("val/map", "val/map_50", "val/map_75", "val/mar_100"):
        assert metrics[key] == pytest.approx(1.0)
    for class_id in CATEGORIES[:-1]:
        assert metrics[f"val/ap/class {class_id}"] == pytest.approx(1.0)
    assert metrics[f"val/ap/class {NO_TRUTH}"] is None


def test_no_predictions_score_zero_not_undefined() -> None:
    gt, _ = random_case(5)
    metrics = coco_metrics(gt, [], prefix="test")
    assert metrics["test/map"] == 0.0 and metrics["test/map_50"] == 0.0 and metrics["test/mar_100"] == 0.0
    assert [metrics[f"test/ap/class {c}"] for c in CATEGORIES] == [0.0, 0.0, 0.0, None]


def test_area_range_without_truth_is_null() -> None:
    """Only large boxes: small/medium AP are undefined (COCO -1), reported as None."""
    gt = {"info": {}, "images": [{"id": 1, "file_name": "a.jpg", "width": 400, "height": 400},
                                 {"id": 2, "file_name": "empty.jpg", "width": 400, "height": 400}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [10, 10, 200, 150], "area": 30000,
                           "iscrowd": 0}],
          "categories": [{"id": 5, "name": "cell"}]}
    dets = [{"image_id": 1, "category_id": 5, "bbox": [12, 10, 200, 150], "score": 0.8}]
    result = compute_coco(gt, dets)
    assert result.summary["map_small"] is None and result.summary["map_medium"] is None
    assert result.summary["map_large"] == pytest.approx(result.summary["map"])
    assert result.summary["map_50"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}, "image_id 999"),
        ({"image_id": 100, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.5}, "category_id 2"),
        ({"image_id": 100, "category_id": 1, "bbox": [0, 0, 5], "score": 0.5}, "bbox"),
        ({"image_id": 100, "category_id": 1, "bbox": [0, 0, 5, 5]}, r"predictions\[0\].*score"),
    ],
)
def test_bad_detection_is_a_data_error(bad: dict[str, Any], message: str) -> None:
    gt, _ = random_case(6)
    with pytest.raises(DataError, match=message):
        compute_coco(gt, [bad])


def test_metric_class_names_are_mlflow_safe_and_unique() -> None:
    gt = {"categories": [{"id": 1, "name": "white/king"}, {"id": 2, "name": "white_king"}, {"id": 3, "name": ".."},
                         {"id": 4, "name": "red blood cell"}]}
    names = metric_class_names(gt)
    assert names[1] == "white_king" and names[2] == "white_king_2"
    assert names[3] not in (".", "..") and "/" not in "".join(names.values())
    assert names[4] == "red blood cell"
