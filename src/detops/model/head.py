"""FCOS-style anchor-free head, shared by all pyramid levels: class logits, box distances, centerness."""

from __future__ import annotations

import math

import torch
from torch import nn


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        # GroupNorm, not BatchNorm: the tower is shared across levels whose statistics differ.
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(_groups(channels), channels), nn.ReLU()]
    return nn.Sequential(*layers)


def _groups(channels: int) -> int:
    """About 8 channels per group (FCOS: 32 groups of 256); at least 1, at most 32."""
    return math.gcd(max(1, min(32, channels // 8)), channels)


class Head(nn.Module):
    """Per level: cls [B,C,H,W], box distances (l,t,r,b)/stride as raw logs [B,4,H,W], centerness [B,1,H,W]."""

    def __init__(self, channels: int, num_classes: int, depth: int, num_levels: int, prior_prob: float = 0.01) -> None:
        super().__init__()
        self.cls_tower = _tower(channels, depth)
        self.box_tower = _tower(channels, depth)
        self.cls_logits = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(num_levels))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]
        # Start every point at the background prior so the focal loss does not explode at step 0.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))  # type: ignore[arg-type]

    def forward(self, features: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        out = []
        for level, feature in enumerate(features):
            cls = self.cls_tower(feature)
            box = self.box_tower(feature)
            out.append((self.cls_logits(cls), self.box_pred(box) * self.scales[level], self.centerness(box)))
        return out
