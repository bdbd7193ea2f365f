"""FCOS target assignment: which ground-truth box (if any) each anchor point learns to predict."""

from __future__ import annotations

import torch

SIZE_OF_INTEREST = 4  # a level hands larger boxes on at 4x its stride (FCOS uses 8 for 800-1333 px inputs)


def regression_ranges(point_strides: torch.Tensor) -> torch.Tensor:
    """[N, 2] (low, high] of max(l, t, r, b) per point: levels hand over at 8x their stride, the finest
    level starts at 0 and the coarsest is open-ended, so every box size has exactly one level."""
    levels = torch.unique(point_strides).tolist()
    bounds = [0.0] + [s * SIZE_OF_INTEREST for s in levels[:-1]] + [float("inf")]
    ranges = torch.zeros((point_strides.shape[0], 2), dtype=torch.float32, device=point_strides.device)
    for i, stride in enumerate(levels):
        ranges[point_strides == stride] = torch.tensor([bounds[i], bounds[i + 1]], device=point_strides.device)
    return ranges


def assign(
    points: torch.Tensor,
    point_strides: torch.Tensor,
    ranges: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    center_radius: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels [N] (-1 = background) and matched xyxy boxes [N, 4] for one image.

    A point is a candidate for a box when it lies inside the box and, with centre sampling, within
    `center_radius` strides of its centre; its level's range must hold the box's largest distance.
    Ties go to the smallest box, as in FCOS.
    """
    n = points.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.long, device=points.device), points.new_zeros((n, 4))
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0, x1, y1 = gt_boxes.unbind(dim=1)
    ltrb = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # [N, M, 4]
    inside = ltrb.amin(dim=2) > 0
    if center_radius > 0:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        radius = point_strides[:, None] * center_radius
        inside &= ((x - cx).abs() < radius) & ((y - cy).abs() < radius)
    reach = ltrb.amax(dim=2)
    in_range = (reach > ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
    area = ((x1 - x0) * (y1 - y0))[None].expand(n, -1)
    area = torch.where(inside & in_range, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(dim=1)
    labels = torch.where(torch.isinf(best_area), torch.full_like(best, -1), gt_labels[best])
    return labels, gt_boxes[best]


def centerness_target(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """How central each point is in its box, in [0, 1] (1 at the centre)."""
    x, y = points[:, 0], points[:, 1]
    lr = torch.stack([x - boxes[:, 0], boxes[:, 2] - x], dim=1).clamp(min=0)
    tb = torch.stack([y - boxes[:, 1], boxes[:, 3] - y], dim=1).clamp(min=0)
    ratio = (lr.amin(1) / lr.amax(1).clamp(min=1e-6)) * (tb.amin(1) / tb.amax(1).clamp(min=1e-6))
    return ratio.sqrt()
