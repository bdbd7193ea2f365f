"""Inference with a trained checkpoint: COCO-format results in original image pixels (used by evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detops.dataset.canonical import Dataset
from detops.errors import DataError
from detops.model.detector import Detector, DetectorConfig
from detops.model.postprocess import decode
from detops.model.preprocess import PAD_VALUE, boxes_to_original
from detops.workspace import Workspace


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


def predict_dataset(ws: Workspace, checkpoint: Path, dataset: Dataset) -> list[dict[str, Any]]:
    """COCO detection results for every image of `dataset`: image_id, original category_id,
    bbox [x, y, w, h] in original pixels, score; thresholds, NMS and batch size from `evaluate` params."""
    from detops.progress import track
    from detops.training.augment import eval_pipeline
    from detops.training.data import ClassMap, DetectionDataset, image_records, make_loader, resolve_workers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, meta = load_detector(checkpoint, device)
    classes = ClassMap(tuple(meta["class_ids"]), tuple(meta["class_names"]))
    images = DetectionDataset(image_records(dataset, ws.root), meta["image_size"], eval_pipeline(meta["image_size"]))
    params = ws.params.evaluate
    loader = make_loader(images, params.batch_size, resolve_workers(ws.params.train.num_workers),
                         pin_memory=device.type == "cuda")
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for batch in track(loader, "predict", total=len(loader)):
            raw = model(batch["images"].to(device, non_blocking=True).float() / 255.0)
            detections = decode(raw, params.score_threshold, params.nms_iou, params.max_detections)
            for det, image_id, lb in zip(detections, batch["image_ids"], batch["letterbox"], strict=True):
                boxes = boxes_to_original(det["boxes"].cpu().numpy(), lb)
                for box, score, label in zip(boxes, det["scores"].tolist(), det["labels"].tolist(), strict=True):
                    x0, y0, x1, y1 = (float(v) for v in box)
                    if x1 <= x0 or y1 <= y0:
                        continue  # collapsed by clipping to the image: not a detection
                    results.append({"image_id": int(image_id), "category_id": classes.ids[label],
                                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                    "score": round(float(score), 5)})
    return results
