"""The one mAP implementation used in training validation and in the evaluate step: torchmetrics'
MeanAveragePrecision on the pycocotools backend (so numbers match COCOeval), never a home-made mAP."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchmetrics.detection import MeanAveragePrecision


def new_map_metric(class_metrics: bool = False) -> MeanAveragePrecision:
    """Boxes in xyxy pixels; preds need boxes/scores/labels, targets boxes/labels (DDP-safe state)."""
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", class_metrics=class_metrics, backend="pycocotools"
    )
