from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class EvaluateParams(Section):
    """COCO mAP of the trained model on one split, PR curves, confusion matrix, prediction grid; in MLflow."""

    split: str = Field("test", pattern=r"^(train|val|test)$", description="Which split to evaluate.")
    score_threshold: float = Field(
        0.001, ge=0, lt=1, description="Lowest score kept before NMS (keep it low: mAP needs the whole PR curve)."
    )
    nms_iou: float = Field(0.6, gt=0, le=1, description="IoU threshold of class-wise NMS.")
    max_detections: int = Field(
        100, ge=1, le=1000, description="Detections kept per image (COCO mAP counts the top 100)."
    )
    plot_score_threshold: float = Field(
        0.3, ge=0, le=1, description="Score from which boxes are drawn and counted in the confusion matrix."
    )
    confusion_iou: float = Field(0.5, gt=0, le=1, description="IoU that matches a prediction to a true box.")
    num_sample_images: int = Field(
        12, ge=0, le=64, description="Images in the prediction grid, spread evenly over the split."
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Images per inference batch.")
