"""The one mAP implementation used in training validation and in the evaluate step: torchmetrics'
MeanAveragePrecision on a COCOeval engine (faster-coco-eval, else pycocotools: `coco_engine`), so numbers match
COCOeval; never a home-made mAP."""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any

from detops.evaluation.coco_engine import CocoEngine, coco_engine

if TYPE_CHECKING:
    from torchmetrics.detection import MeanAveragePrecision


def new_map_metric(class_metrics: bool = False, extended_summary: bool = False,
                   engine: CocoEngine | None = None) -> MeanAveragePrecision:
    """Boxes in xyxy pixels; preds need boxes/scores/labels, targets boxes/labels (DDP-safe state).

    Targets may carry `area` (COCO's small/medium/large use the annotation area, not the box area) and
    `iscrowd`. `extended_summary` adds COCOeval's precision array (PR curves). The IoU and recall
    thresholds are COCOeval's own float64 ones: torchmetrics' defaults come from a float32 linspace
    (0.07 -> 0.0700000003), which moves recall points that land exactly on a threshold (k/n) and so
    drifts from COCOeval (up to 2.3e-3 in mAP on 40 random sets; 1e-8 with these). `engine` defaults to
    the installed one (`coco_engine`).
    """
    from torchmetrics.detection import MeanAveragePrecision

    engine = engine or coco_engine()
    iou_thresholds, rec_thresholds, max_dets = engine.iou_and_recall_thresholds()
    return MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        iou_thresholds=iou_thresholds,
        rec_thresholds=rec_thresholds,
        max_detection_thresholds=max_dets,
        class_metrics=class_metrics,
        extended_summary=extended_summary,
        backend=engine.name,
    )


def compute_quietly(metric: MeanAveragePrecision) -> dict[str, Any]:
    """`metric.compute()` without the engine's summary printout, which would drown the progress bars."""
    with contextlib.redirect_stdout(io.StringIO()):
        result: dict[str, Any] = metric.compute()
    return result
