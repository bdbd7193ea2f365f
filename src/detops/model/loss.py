"""FCOS loss from torchvision's parts: sigmoid focal loss, GIoU box loss, centerness BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from detops.model.layout import BOX_SLICE, CENTERNESS, FIRST_CLASS
from detops.model.targets import assign, centerness_target, regression_ranges


class DetectionLoss(nn.Module):
    """Sum of the class, box and centerness terms, normalised by the number of positive points."""

    points: torch.Tensor
    point_strides: torch.Tensor
    ranges: torch.Tensor

    def __init__(self, points: torch.Tensor, point_strides: torch.Tensor, center_radius: float = 1.5,
                 box_weight: float = 1.0) -> None:
        super().__init__()
        self.center_radius = center_radius
        self.box_weight = box_weight
        self.register_buffer("points", points.clone(), persistent=False)
        self.register_buffer("point_strides", point_strides.clone(), persistent=False)
        self.register_buffer("ranges", regression_ranges(point_strides), persistent=False)

    @torch.no_grad()
    def targets(self, boxes: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per point: label (-1 = background) and matched xyxy box, for each image of the batch."""
        pairs = [
            assign(self.points, self.point_strides, self.ranges, b.float(), lab, self.center_radius)
            for b, lab in zip(boxes, labels, strict=True)
        ]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def forward(
        self, raw: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        raw = raw.float()
        cls_logits = raw[..., FIRST_CLASS:]
        target_labels, target_boxes = self.targets(boxes, labels)
        positive = target_labels >= 0
        num_pos = positive.sum().clamp(min=1).float()

        cls_target = torch.zeros_like(cls_logits)
        cls_target[positive] = F.one_hot(target_labels[positive], cls_logits.shape[-1]).to(cls_target.dtype)
        loss_cls = sigmoid_focal_loss(cls_logits, cls_target, reduction="sum") / num_pos

        pos_points = self.points[None].expand(raw.shape[0], -1, -1)[positive]
        ctr_target = centerness_target(pos_points, target_boxes[positive])
        pred_boxes = raw[..., BOX_SLICE][positive]
        if pred_boxes.numel():
            box_losses = generalized_box_iou_loss(pred_boxes, target_boxes[positive], reduction="none")
            loss_box = (box_losses * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
            loss_ctr = F.binary_cross_entropy_with_logits(raw[..., CENTERNESS][positive], ctr_target, reduction="sum")
            loss_ctr = loss_ctr / num_pos
        else:  # no box in the batch: keep the graph connected so DDP and the optimizer see every parameter
            loss_box = raw[..., BOX_SLICE].sum() * 0.0
            loss_ctr = raw[..., CENTERNESS].sum() * 0.0
        loss = loss_cls + self.box_weight * loss_box + loss_ctr
        return {"loss": loss, "cls": loss_cls.detach(), "box": loss_box.detach(), "ctr": loss_ctr.detach(),
                "positives": num_pos.detach()}
