"""Feature pyramid: torchvision's FPN, giving every level the same channel count for a shared head."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork


class Neck(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork(list(in_channels), channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out = self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))
        return list(out.values())
