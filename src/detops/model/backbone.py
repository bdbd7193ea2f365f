"""Any timm model as a multi-scale feature extractor, at the strides the detector head uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from detops.errors import ParamsError, TrainingError


def _create(name: str, pretrained: bool | str, out_indices: tuple[int, ...] | None = None) -> Any:
    import timm

    kwargs: dict[str, Any] = {"features_only": True}
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    if isinstance(pretrained, str):
        path = Path(pretrained)
        if not path.is_file():
            raise ParamsError(f"train.pretrained: weights file {path} not found (a timm state dict is expected).")
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    else:
        kwargs["pretrained"] = pretrained
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ParamsError(f"train.backbone: {name!r} is not a timm model (see timm.list_models()).") from None
        raise TrainingError(f"backbone {name!r}: cannot create it with features_only ({exc}).") from None
    except (OSError, ValueError) as exc:
        where = f"from {pretrained}" if isinstance(pretrained, str) else "from the timm hub (is it cached?)"
        raise TrainingError(
            f"backbone {name!r}: cannot load pretrained weights {where}: {exc}. "
            "Set train.pretrained to false or to a local .safetensors/.pth file."
        ) from None


class Backbone(nn.Module):
    """timm `features_only` model returning one feature map per requested stride (finest first)."""

    def __init__(self, name: str, strides: tuple[int, ...], pretrained: bool | str = False) -> None:
        super().__init__()
        reductions = list(_create(name, False).feature_info.reduction())
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ParamsError(
                f"train.strides {list(strides)}: backbone {name!r} has feature maps at strides {reductions}; "
                f"{missing} not among them."
            )
        # The deepest map at each stride carries the most context.
        indices = tuple(len(reductions) - 1 - reductions[::-1].index(s) for s in strides)
        self.body: nn.Module = _create(name, pretrained, indices)
        self.strides = tuple(strides)
        self.channels = tuple(int(c) for c in self.body.feature_info.channels())
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))
