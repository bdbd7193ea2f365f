"""A bootstrap interval of COCO mAP over images: how far a mAP measured on a few dozen labelled images can be
from the model's mAP on the traffic they were drawn from.

Re-running the COCO evaluation on each resampled image list costs about 0.3 s at 40 images with the shared metric
(50 ms with faster-coco-eval alone), so 1000 resamples would take minutes. COCOeval's matching is per image,
though: the detections it keeps, what each matched at each IoU threshold and which ground truth it ignores do not
change when an image is drawn twice. So the matching runs once (pycocotools' own `evaluate`), and each resample
only accumulates: an image drawn c times weighs c in the cumulative true and false positives and the ground-truth
count, and precision at COCO's 101 recall points is read as COCOeval's `accumulate` reads it (area `all`, 100
detections). At weight 1 everywhere this is the scorer's mAP (tests/test_production.py checks 1e-6).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from detops.dataset.canonical import Dataset
from detops.evaluation.metrics import Detection, check_detections

RESAMPLES = 1000
LEVEL = 0.9


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections of every image, sorted by score (highest first, ties in image order as COCOeval)."""

    image: np.ndarray  # (D,) index of the detection's image
    tp: np.ndarray  # (T, D) matched a ground truth at IoU threshold t, not ignored
    fp: np.ndarray  # (T, D) matched none, not ignored
    gt: np.ndarray  # (I,) ground truths of the class not ignored, per image


def per_image_matches(gt: Dataset, detections: list[Detection]) -> tuple[list[ClassMatches], np.ndarray, int]:
    """COCOeval's per-image matching of `detections` on `gt`: each class with ground truth somewhere, the recall
    thresholds, and the number of images."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = check_detections(gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": gt["images"], "categories": gt["categories"],
                         "annotations": [_annotation(a) for a in gt["annotations"]]}
        truth.createIndex()
        found = truth.loadRes(detections) if detections else COCO()
        if not detections:
            found.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            found.createIndex()
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
    params = evaluation.params
    images, areas, max_det = list(params.imgIds), len(params.areaRng), params.maxDets[-1]
    classes = []
    for k, _ in enumerate(params.catIds):
        entries = [(i, evaluation.evalImgs[k * areas * len(images) + i]) for i in range(len(images))]  # area `all`
        gt_count = np.array([0 if e is None else int((np.asarray(e["gtIgnore"]) == 0).sum()) for _, e in entries])
        if gt_count.sum() == 0:
            continue  # COCOeval leaves the class undefined (-1) and the mean skips it
        kept = [(i, e) for i, e in entries if e is not None]  # not empty: an image holds the class's ground truth
        scores = np.concatenate([np.asarray(e["dtScores"][:max_det], dtype=np.float64) for _, e in kept])
        image = np.concatenate([np.full(min(len(e["dtScores"]), max_det), i, dtype=np.int64) for i, e in kept])
        matched = np.concatenate([np.asarray(e["dtMatches"]).reshape(len(params.iouThrs), -1)[:, :max_det]
                                  for _, e in kept], axis=1)
        ignored = np.concatenate([np.asarray(e["dtIgnore"]).reshape(len(params.iouThrs), -1)[:, :max_det]
                                  for _, e in kept], axis=1).astype(bool)
        order = np.argsort(-scores, kind="mergesort")
        tp = (matched != 0) & ~ignored
        fp = (matched == 0) & ~ignored
        classes.append(ClassMatches(image[order], tp[:, order], fp[:, order], gt_count))
    return classes, np.asarray(params.recThrs, dtype=np.float64), len(images)


def weighted_map(classes: list[ClassMatches], recall_thresholds: np.ndarray, weights: np.ndarray) -> float | None:
    """COCO mAP with image i counted `weights[i]` times (COCOeval's accumulate, area `all`, 100 detections); None
    when no class has ground truth."""
    aps = []
    for c in classes:
        npig = float((c.gt * weights).sum())
        if npig == 0:
            continue  # no ground truth of the class among the drawn images: undefined, as COCOeval says
        w = weights[c.image].astype(np.float64)
        tp_sum = np.cumsum(c.tp * w, axis=1)
        fp_sum = np.cumsum(c.fp * w, axis=1)
        for tps, fps in zip(tp_sum, fp_sum, strict=True):
            recall = tps / npig
            precision = tps / np.maximum(tps + fps, np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1]  # COCOeval's interpolation
            at = np.searchsorted(recall, recall_thresholds, side="left")
            q = np.zeros(len(recall_thresholds))
            inside = at < len(precision)
            q[inside] = precision[at[inside]]
            aps.append(q.mean())
    return float(np.mean(aps)) if aps else None


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "level": self.level, "resamples": self.resamples,
                "seed": self.seed}


def bootstrap_map(gt: Dataset, detections: list[Detection], *, resamples: int = RESAMPLES, level: float = LEVEL,
                  seed: int = 0) -> Interval | None:
    """The percentile bootstrap interval of COCO mAP over `gt`'s images (drawn with replacement, seeded); None when
    the split has no ground truth."""
    classes, recall_thresholds, n = per_image_matches(gt, detections)
    if not classes:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = weighted_map(classes, recall_thresholds, np.bincount(rng.integers(0, n, n), minlength=n))
        if value is not None:
            values.append(value)
    tail = (1 - level) / 2
    low, high = np.quantile(np.asarray(values), [tail, 1 - tail])
    return Interval(float(low), float(high), level, resamples, seed)


def _annotation(ann: dict[str, Any]) -> dict[str, Any]:
    """A ground-truth box as COCOeval reads it (the area it buckets by; the box area where none is given)."""
    bbox = [float(v) for v in ann["bbox"]]
    area = ann.get("area")
    return {**ann, "bbox": bbox, "area": float(area) if area is not None else bbox[2] * bbox[3],
            "iscrowd": int(ann.get("iscrowd", 0))}
