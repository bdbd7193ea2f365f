"""Load a trained checkpoint as a torch module plus what a deployment needs to know (`detops.inference` runs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detops.errors import DataError
from detops.model.detector import Detector, DetectorConfig
from detops.model.preprocess import PAD_VALUE


def load_detector(checkpoint: Path, device: str | torch.device = "cpu") -> tuple[Detector, dict[str, Any]]:
    """The detector (eval mode, EMA weights when training used EMA) and what a deployment needs to know.

    meta: image_size, class_ids / class_names (label i -> original category id / name), strides, backbone,
    pad_value, the postprocess thresholds used in validation, and the input/output layout.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: checkpoint not found. Run `detops train` first.")
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        hparams = ckpt["hyper_parameters"]
        config = DetectorConfig.from_dict(hparams["model"])
    except (KeyError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{checkpoint}: not a detops checkpoint ({exc}).") from None
    model = Detector(config, pretrained=False)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    model.eval().to(device)
    meta = {
        "image_size": config.image_size,
        "class_ids": list(hparams["classes"]["ids"]),
        "class_names": list(hparams["classes"]["names"]),
        "strides": list(config.strides),
        "backbone": config.backbone,
        "pad_value": PAD_VALUE,
        "postprocess": dict(hparams["postprocess"]),
        "input": "float32 RGB in [0, 1], NCHW, letterboxed (longest side resized, centred padding)",
        "output": "[B, N, 5 + C]: x1, y1, x2, y2 (input pixels), centerness logit, C class logits",
    }
    return model, meta
