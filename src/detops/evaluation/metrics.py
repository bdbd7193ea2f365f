"""COCO metrics of a set of detections against a canonical ground-truth dataset.

Detections are COCO results (`{image_id, category_id, bbox: [x, y, w, h], score}`, original ids, image
pixels). They go through the shared torchmetrics metric (`new_map_metric`), fed so that its numbers equal
pycocotools' COCOeval on the same json: one entry per ground-truth image in image-id order, the
annotation `area` (COCO's small/medium/large buckets) and `iscrowd` passed through. COCO reports an
undefined value (no ground truth for a class or an area range) as -1; here it is None.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from detops.dataset.canonical import Dataset, category_names
from detops.errors import DataError

if TYPE_CHECKING:
    import torch

Detection = dict[str, Any]

_METRIC_UNSAFE = re.compile(r"[^\w.\- ]")  # MLflow's portable metric-name characters, minus '/'

# torchmetrics' result keys, in COCOeval.stats order.
SUMMARY_KEYS = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)


@dataclass(frozen=True)
class CocoResult:
    """Summary metrics, per-class AP and the IoU=0.5 PR curves of one evaluation (None = undefined)."""

    summary: dict[str, float | None]
    ap: dict[int, float | None]  # category id -> AP@[.5:.95]; None when the class has no ground truth
    ap50: dict[int, float | None]
    recall_thresholds: list[float]
    pr_curves: dict[int, list[float]] = field(default_factory=dict)  # precision at each recall threshold


def check_detections(gt: Dataset, detections: list[Detection], source: str = "predictions") -> list[Detection]:
    """Detections with float fields; one naming an unknown image or class, or a bad box, is a DataError."""
    image_ids = {int(im["id"]) for im in gt["images"]}
    names = category_names(gt)
    out = []
    for i, det in enumerate(detections):
        where = f"{source}[{i}]"
        try:
            image_id, category_id = int(det["image_id"]), int(det["category_id"])
            bbox = [float(v) for v in det["bbox"]]
            score = float(det["score"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: expected {{image_id, category_id, bbox: [x, y, w, h], score}} ({exc}).") from exc
        if image_id not in image_ids:
            raise DataError(f"{where}: image_id {image_id} is not in the evaluated split; "
                            "predictions must come from the same split file.")
        if category_id not in names:
            raise DataError(f"{where}: category_id {category_id} is not a category of the dataset "
                            f"(known: {sorted(names)}); the model was trained on other classes.")
        if len(bbox) != 4 or not all(math.isfinite(v) for v in [*bbox, score]) or bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{where}: bbox {bbox} / score {score} is not a finite [x, y, w, h] with w, h >= 0.")
        out.append({"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score})
    return out


def compute_coco(gt: Dataset, detections: list[Detection]) -> CocoResult:
    """Run the shared mAP metric once: summary, per-class AP and PR curves from the same COCOeval pass."""
    import torch

    from detops.evaluation.map_metric import compute_quietly, new_map_metric

    detections = check_detections(gt, detections)
    by_image: dict[int, list[Detection]] = defaultdict(list)
    for det in detections:
        by_image[det["image_id"]].append(det)
    anns_by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt["annotations"]:
        anns_by_image[int(ann["image_id"])].append(ann)

    preds, targets = [], []
    # Image-id order, like COCOeval's sorted imgIds, so score ties break the same way.
    for image_id in sorted(int(im["id"]) for im in gt["images"]):
        dets, anns = by_image.get(image_id, []), anns_by_image.get(image_id, [])
        preds.append({
            "boxes": xyxy_tensor([d["bbox"] for d in dets]),
            "scores": torch.tensor([d["score"] for d in dets], dtype=torch.float64),
            "labels": torch.tensor([d["category_id"] for d in dets], dtype=torch.int64),
        })
        targets.append({
            "boxes": xyxy_tensor([a["bbox"] for a in anns]),
            "labels": torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.int64),
            "area": torch.tensor([_area(a) for a in anns], dtype=torch.float64),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
        })

    # Per-class AP comes from the one pass's precision array: class_metrics would run COCOeval again per class,
    # the largest share of evaluation's peak memory after the detections themselves.
    metric = new_map_metric(extended_summary=True)
    metric.warn_on_many_detections = False  # COCO counts the top 100 per image by design
    metric.update(preds, targets)
    raw = compute_quietly(metric)
    return _to_result(raw, metric.rec_thresholds)


def xyxy_tensor(boxes: list[list[float]]) -> torch.Tensor:
    """COCO [x, y, w, h] boxes as an (N, 4) float64 xyxy tensor (float64: no rounding against COCOeval)."""
    import torch

    t = torch.tensor([[float(v) for v in box] for box in boxes], dtype=torch.float64).reshape(-1, 4)
    return torch.cat([t[:, :2], t[:, :2] + t[:, 2:]], dim=1)


def _area(ann: dict[str, Any]) -> float:
    """COCOeval buckets by the annotation's `area`; fall back to the box area when it is missing."""
    area = ann.get("area")
    return float(area) if area is not None else float(ann["bbox"][2]) * float(ann["bbox"][3])


def _defined(value: float) -> float | None:
    return None if value < 0 else float(value)


def _mean_defined(values: Any) -> float | None:
    """COCOeval's mean over the entries it defined (-1: no ground truth there), None when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if len(defined) else None


def _to_result(raw: dict[str, Any], recall_thresholds: list[float]) -> CocoResult:
    summary = {key: _defined(float(raw[key])) for key in SUMMARY_KEYS}
    classes = [int(c) for c in raw["classes"].reshape(-1).tolist()]
    ap: dict[int, float | None] = {}
    ap50: dict[int, float | None] = {}
    curves: dict[int, list[float]] = {}
    if "precision" in raw and raw["precision"].ndim == 5:  # no image at all: the -1 summary and no array
        # COCOeval precision: [iou thr, recall thr, class (sorted ids), area range, max dets]; a class's AP is
        # COCOeval's summary restricted to its column (area all, 100 detections), AP50 its IoU-0.5 row.
        for k, class_id in enumerate(classes):
            ap[class_id] = _mean_defined(raw["precision"][:, :, k, 0, -1])
            column = raw["precision"][0, :, k, 0, -1]
            ap50[class_id] = _mean_defined(column)
            if ap50[class_id] is not None:
                curves[class_id] = [float(v) for v in column.tolist()]
    return CocoResult(summary, ap, ap50, [float(r) for r in recall_thresholds], curves)


def flat_metrics(result: CocoResult, gt: Dataset, prefix: str) -> dict[str, float | None]:
    """The DVC/MLflow metric names: `<prefix>/map`, ..., `<prefix>/ap/<class>` for every dataset class."""
    metrics: dict[str, float | None] = {f"{prefix}/{key}": value for key, value in result.summary.items()}
    for class_id, name in metric_class_names(gt).items():
        metrics[f"{prefix}/ap/{name}"] = result.ap.get(class_id)
    return metrics


def metric_class_names(gt: Dataset) -> dict[int, str]:
    """Class names usable inside a metric name (MLflow: letters, digits, `_-. `; no `/`), unique per id."""
    out: dict[int, str] = {}
    for class_id, name in sorted(category_names(gt).items()):
        clean = _METRIC_UNSAFE.sub("_", name).strip() or "class"
        if set(clean) <= {"."} or clean in out.values():
            clean = f"{clean}_{class_id}"
        out[class_id] = clean
    return out


def coco_metrics(gt: Dataset, detections: list[Detection], prefix: str = "test") -> dict[str, float | None]:
    """Flat COCO metrics of `detections` on `gt` (None where COCO leaves them undefined)."""
    return flat_metrics(compute_coco(gt, detections), gt, prefix)
