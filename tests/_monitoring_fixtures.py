"""Data for the monitoring tests: the synthetic sample as reference, and batches made from it in the landing folder.

A batch is another seed of the generator, optionally with its images changed (darker, blurred, half size) and
written back as PNG with the generator's own settings, so only the change under test differs from the reference.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from detops.config import load_params
from detops.config.sample import SampleParams
from detops.dataset.canonical import write_dataset
from detops.dataset.images import probe_images
from detops.formats import read_source
from detops.formats.source import to_canonical
from detops.sample.generate import ANNOTATIONS_FILE, PNG_COMPRESSION, generate_sample
from detops.workspace import Workspace

SIZE = 128
IMAGES = 100
NO_SCREENSHOT = ("monitor.screenshot=false",)

Change = Callable[[Image.Image], Image.Image]


def workspace(root: Path, *overrides: str) -> Workspace:
    """A workspace at `root` with the repository's params and `overrides` (tests share one root, so one MLflow db)."""
    return Workspace.at(root, load_params(root / "params.yaml", overrides))


def sample(out: Path, seed: int, num_images: int = IMAGES, weights: list[float] | None = None) -> Path:
    params = SampleParams(num_images=num_images, image_size=SIZE, seed=seed, workers=1,
                          **({"class_weights": weights} if weights else {}))
    generate_sample(out, params)
    return out


def write_train_split(ws: Workspace, raw: Path) -> None:
    """The sample at `raw` as the workspace's train split (what `import` + `split` would give, without the split)."""
    source = read_source("coco", raw)
    dataset, _ = to_canonical(source, probe_images(source.image_paths()), ws.relative(raw))
    write_dataset(ws.split_json("train"), dataset)


def darker(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.round(np.asarray(image, dtype=np.float32) * 0.5).astype(np.uint8))


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(2))


def half_size(image: Image.Image) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.BOX)


def batch_from(source: Path, landing: Path, name: str, change: Change | None = None, scale: float = 1.0,
               manifest: str = "_READY") -> Path:
    """Copy the COCO sample at `source` into `landing/name`, each image changed by `change` (boxes and sizes
    scaled by `scale`), then write the manifest (last, as a delivery would)."""
    target = landing / name
    shutil.copytree(source, target)
    coco: dict[str, Any] = json.loads((target / ANNOTATIONS_FILE).read_text(encoding="utf-8"))
    if change is not None:
        for image in coco["images"]:
            path = target / image["file_name"]
            with Image.open(path) as img:
                changed = change(img.convert("RGB"))
            changed.save(path, format="PNG", compress_level=PNG_COMPRESSION)
            image["width"], image["height"] = changed.size
    for ann in coco["annotations"]:
        ann["bbox"] = [v * scale for v in ann["bbox"]]
        ann["area"] = ann["area"] * scale * scale
    (target / ANNOTATIONS_FILE).write_text(json.dumps(coco), encoding="utf-8")
    if manifest:
        (target / manifest).write_text("", encoding="utf-8")
    return target


def tiny_checkpoint(path: Path, classes: list[str]) -> Path:
    """An untrained detops checkpoint (resnet18 at 64 px, fixed seed): its backbone still tells images apart."""
    import torch

    from detops.model.detector import Detector, DetectorConfig

    torch.manual_seed(0)
    config = DetectorConfig(backbone="resnet18", num_classes=len(classes), image_size=64, strides=(8, 16, 32),
                            fpn_channels=16, head_convs=1)
    model = Detector(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "hyper_parameters": {
            "model": config.to_dict(),
            "classes": {"ids": list(range(1, len(classes) + 1)), "names": classes},
            "postprocess": {"score_threshold": 0.05, "nms_iou": 0.6, "max_detections": 100},
        },
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
    }, path)
    return path


def count_reference_loads(monkeypatch: Any) -> list[str]:
    """A list that gets one entry each time the monitor step loads its reference (the real load still runs)."""
    import detops.steps.monitor as monitor_step

    loads: list[str] = []
    real = monitor_step.load_reference

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append("reference")
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor_step, "load_reference", counting)
    return loads
