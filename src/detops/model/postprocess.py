"""Raw detector output -> final detections in torch, for validation inside training (on the training device).

Every deployed model decodes with `detops.inference.decode` instead (numpy, no torch); a test keeps the two
equal. Thresholds are always passed in: they come from params.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import torch
from torchvision.ops import batched_nms

from detops.model.layout import BOX_SLICE, CENTERNESS, FIRST_CLASS, PRE_NMS_TOP_K


class Detections(TypedDict):
    """One image's detections: xyxy boxes [K, 4] in input pixels, scores [K], contiguous labels [K]."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def scores_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """[B, N, C] detection scores: geometric mean of class probability and centerness (FCOS)."""
    cls = torch.sigmoid(raw[..., FIRST_CLASS:])
    ctr = torch.sigmoid(raw[..., CENTERNESS : CENTERNESS + 1])
    return torch.sqrt(cls * ctr)


def decode(
    raw: torch.Tensor | np.ndarray,
    score_threshold: float,
    nms_iou: float,
    max_detections: int,
    pre_nms_top_k: int = PRE_NMS_TOP_K,
) -> list[Detections]:
    """Per image of a `[B, N, 5 + C]` raw output, the detections above `score_threshold` after NMS."""
    raw_t = torch.as_tensor(raw).float()
    scores = scores_from_raw(raw_t)
    boxes = raw_t[..., BOX_SLICE]
    num_classes = scores.shape[-1]
    out: list[Detections] = []
    for image_scores, image_boxes in zip(scores, boxes, strict=True):
        flat = image_scores.reshape(-1)
        candidates = torch.nonzero(flat > score_threshold).squeeze(1)
        if candidates.numel() > pre_nms_top_k:
            top = flat[candidates].topk(pre_nms_top_k).indices
            candidates = candidates[top]
        point, label = candidates // num_classes, candidates % num_classes
        kept_boxes, kept_scores = image_boxes[point], flat[candidates]
        keep = batched_nms(kept_boxes, kept_scores, label, nms_iou)[:max_detections]
        out.append({"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep]})
    return out
