"""Score one exported file like `evaluate` scores the checkpoint: one `Variant` row, timed later."""

from __future__ import annotations

from pathlib import Path

from detops.dataset.canonical import Dataset
from detops.evaluation.metrics import coco_metrics
from detops.export.gate import Variant
from detops.inference.dataset import predict_dataset
from detops.inference.predictor import Predictor
from detops.inference.tensorrt import sidecar_path


def score_variant(name: str, predictor: Predictor, precision: str, target: str, gt: Dataset, root: Path,
                  split: str, batch_size: int, file_label: str) -> Variant:
    """COCO metrics on `gt` through `predictor` (per-class APs left to `evaluate`)."""
    results = predict_dataset(predictor, gt, root, batch_size, label=f"score {name}")
    metrics = coco_metrics(gt, results, prefix=split)
    path = predictor.path
    size = sum(p.stat().st_size for p in (path, sidecar_path(path)) if p.is_file())
    on_gpu = predictor.kind == "tensorrt" or "cuda" in predictor.runtime_name.lower()
    return Variant(
        name=name, file=file_label, precision=precision, runtime=predictor.runtime_name, target=target,
        size_mb=round(size / 2**20, 3), metrics={k: v for k, v in metrics.items() if "/ap/" not in k},
        latency=None, timed_on="gpu" if on_gpu else "cpu",
    )
