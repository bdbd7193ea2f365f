"""The one scorer: any artifact (checkpoint, ONNX file of any precision, TensorRT engine) on one split, as
`evaluate` scores it.

`evaluate`, every `export` variant, the champion's re-score in `promote` and the benchmarks score through
`Scorer` and nothing else: the artifact is loaded by `detops.inference` with the `evaluate` thresholds, its class
set is checked against the split's (names and dataset ids must both agree: `detops.dataset.classes`),
the split is predicted and the COCO metrics are returned with the per-image detections they were computed from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from detops.dataset.canonical import Dataset, category_names, read_dataset
from detops.dataset.classes import check_classes
from detops.errors import DataError
from detops.evaluation.metrics import CocoResult, Detection, check_detections, compute_coco, flat_metrics

if TYPE_CHECKING:
    from detops.inference.decode import Thresholds
    from detops.inference.predictor import Predictor
    from detops.workspace import Workspace


@dataclass(frozen=True)
class Score:
    """One artifact on one split: flat metrics (`<split>/map`, ..., `<split>/ap/<class>`), the COCO result they
    come from (per-class AP, PR curves) and the detections (COCO results: original ids, [x, y, w, h] pixels)."""

    metrics: dict[str, float | None]
    result: CocoResult
    detections: list[Detection]


def load_split(ws: Workspace, split: str | None = None) -> Dataset:
    """The split `evaluate` scores on (`evaluate.split` unless named), which must exist and hold images."""
    split = split or ws.params.evaluate.split
    path = ws.split_json(split)
    if not path.is_file():
        raise DataError(f"{path}: the {split!r} split file is missing (evaluate.split = {split}). "
                        "Run `detops split` first.")
    gt = read_dataset(path)
    if not gt["images"]:
        raise DataError(f"{path}: the {split!r} split has no images; nothing to evaluate. "
                        "Change split ratios or evaluate.split.")
    return gt


@dataclass(frozen=True)
class Scorer:
    """Scores artifacts on the ground truth `gt` of `split`, decoding with `thresholds`."""

    gt: Dataset
    split: str
    split_file: str  # for messages
    root: Path  # the workspace root: image paths of `gt` resolve from it
    thresholds: Thresholds
    batch_size: int

    @classmethod
    def of(cls, ws: Workspace, gt: Dataset | None = None, split: str | None = None) -> Scorer:
        """The `evaluate` params' scorer: its split (read from the workspace unless `gt` is given), thresholds and
        batch size."""
        from detops.inference.loading import evaluation_thresholds

        params = ws.params.evaluate
        split = split or params.split
        gt = load_split(ws, split) if gt is None else gt
        return cls(gt, split, ws.relative(ws.split_json(split)), ws.root, evaluation_thresholds(params),
                   params.batch_size)

    def load(self, artifact: Path, *, threads: int = 0, device: str = "auto") -> Predictor:
        """The artifact's predictor, decoding with the evaluation thresholds (`threads` > 0 pins CPU threads)."""
        from detops.inference.loading import load_predictor

        return load_predictor(artifact, self.thresholds, device=device, threads=threads)

    def score(self, artifact: Path | Predictor, *, who: str | None = None, label: str = "predict",
              threads: int = 0) -> Score:
        """Load (a path) or take (a predictor, its thresholds set to the evaluation's), check the class set, predict
        the split, compute the metrics. `who` names the artifact in a class-set error (default: its path)."""
        predictor = self.load(artifact, threads=threads) if isinstance(artifact, Path) else artifact
        predictor = predictor.with_thresholds(self.thresholds)
        self._check_classes(predictor, who or str(predictor.path))
        return self.measure(self.predict(predictor, label))

    def predict(self, predictor: Predictor, label: str = "predict") -> list[Detection]:
        """COCO results of `predictor` on every image of the split (`label`: the progress bar's)."""
        from detops.inference.dataset import predict_dataset

        return predict_dataset(predictor, self.gt, self.root, self.batch_size, label=label)

    def measure(self, detections: list[Detection]) -> Score:
        """The metrics of COCO results on the split (any source: a model here, another detector in a benchmark)."""
        checked = check_detections(self.gt, detections)
        result = compute_coco(self.gt, checked)
        return Score(flat_metrics(result, self.gt, self.split), result, checked)

    def _check_classes(self, predictor: Predictor, who: str) -> None:
        model = dict(zip(predictor.meta.class_ids, predictor.meta.class_names, strict=True))
        check_classes(model, category_names(self.gt), who=who, ref="the split", ref_file=self.split_file, exact=True,
                      fix="A model is scored only on a split of the classes it was trained on: train one on this "
                          "data (`detops train`).")
