"""The detector as one static-shape graph: letterboxed RGB in, one raw prediction per anchor point out.

Output `[B, N, 5 + C]` per point: decoded box `x1,y1,x2,y2` in input pixels, centerness logit, C class
logits. N is fixed by the input size (anchor points are buffers), so ONNX/TensorRT see static shapes;
thresholds and NMS live in `detops.model.postprocess`, which also runs on the exported model's output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from detops.errors import TrainingError
from detops.model.backbone import Backbone
from detops.model.head import Head
from detops.model.neck import Neck

if TYPE_CHECKING:
    from detops.config.train import TrainParams

MAX_LOG_DISTANCE = 8.0  # exp(8) strides: far beyond any image, only guards against overflow


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild the network from a checkpoint (stored in its hyperparameters)."""

    backbone: str
    num_classes: int
    image_size: int
    strides: tuple[int, ...]
    fpn_channels: int
    head_convs: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "strides": list(self.strides)}

    @classmethod
    def from_params(cls, train: TrainParams, num_classes: int, **changes: Any) -> DetectorConfig:
        """The network `train` params describe (params.yaml holds every default), with `changes` on top."""
        fields = {"backbone": train.backbone, "num_classes": num_classes, "image_size": train.image_size,
                  "strides": tuple(train.strides), "fpn_channels": train.fpn_channels, "head_convs": train.head_convs}
        return cls(**{**fields, **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        return cls(**{**data, "strides": tuple(data["strides"])})


def check_image_size(image_size: int, strides: tuple[int, ...], backbone: str) -> None:
    """The input must tile exactly into every level, or the anchor grid would not match the features."""
    largest = max(strides)
    if image_size % largest:
        lower = max(largest, image_size // largest * largest)
        raise TrainingError(
            f"train.image_size={image_size} is not divisible by {largest}, the largest stride used "
            f"({backbone}, strides {list(strides)}). Use {lower} or {lower + largest}."
        )


def anchor_points(image_size: int, strides: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres of every feature-map cell, level after level, row-major: ([N, 2] xy, [N] stride)."""
    points, point_strides = [], []
    for stride in strides:
        n = image_size // stride
        coords = (torch.arange(n, dtype=torch.float32) + 0.5) * stride
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
        point_strides.append(torch.full((n * n,), float(stride)))
    return torch.cat(points), torch.cat(point_strides)


class Detector(nn.Module):
    """Backbone -> FPN -> shared head; input float RGB in [0, 1], shape [B, 3, S, S]."""

    points: torch.Tensor
    point_strides: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: DetectorConfig, pretrained: bool | str = False) -> None:
        super().__init__()
        check_image_size(config.image_size, config.strides, config.backbone)
        self.config = config
        self.backbone = Backbone(config.backbone, config.strides, pretrained)
        self.neck = Neck(self.backbone.channels, config.fpn_channels)
        self.head = Head(config.fpn_channels, config.num_classes, config.head_convs, len(config.strides))
        points, strides = anchor_points(config.image_size, config.strides)
        self.register_buffer("points", points, persistent=False)
        self.register_buffer("point_strides", strides, persistent=False)
        self.register_buffer("mean", torch.tensor(self.backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.backbone.std).view(1, 3, 1, 1), persistent=False)
        self._check_feature_sizes()

    def _check_feature_sizes(self) -> None:
        """Some timm nets pad or crop oddly; verify once that each level has the expected grid."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            feats = self.backbone(torch.zeros(1, 3, self.config.image_size, self.config.image_size))
        self.train(was_training)
        for feat, stride in zip(feats, self.config.strides, strict=True):
            expected = self.config.image_size // stride
            if tuple(feat.shape[-2:]) != (expected, expected):
                raise TrainingError(
                    f"backbone {self.config.backbone!r} gives a {tuple(feat.shape[-2:])} map at stride {stride} "
                    f"for a {self.config.image_size}px input (expected {expected}x{expected}); pick another image_size."
                )

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        levels = self.head(self.neck(self.backbone(x)))
        batch = images.shape[0]
        cls = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1, c.shape[1]) for c, _, _ in levels], dim=1)
        box = torch.cat([b.permute(0, 2, 3, 1).reshape(batch, -1, 4) for _, b, _ in levels], dim=1)
        ctr = torch.cat([t.permute(0, 2, 3, 1).reshape(batch, -1, 1) for _, _, t in levels], dim=1)
        distances = torch.exp(box.float().clamp(max=MAX_LOG_DISTANCE)) * self.point_strides[None, :, None]
        points = self.points[None]
        boxes = torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)
        return torch.cat([boxes, ctr.float(), cls.float()], dim=-1)
