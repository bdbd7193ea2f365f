"""Score the champion again, on today's test split, exactly as `evaluate` scored the candidate: its own checkpoint
through `load_predictor` with the `evaluate` thresholds, `predict_dataset`, `coco_metrics`.

The number recorded when the champion was promoted came from the test split of its day; comparing it with a
candidate scored on a newer split would compare two different exams. Fail closed: a champion whose checkpoint
cannot be downloaded or loaded raises, and `promote_version` then promotes nothing.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from detops.dataset.canonical import Dataset, category_names, read_dataset
from detops.errors import DataError, PromotionError
from detops.registry.files import download_version_file
from detops.registry.gate import ChampionScore
from detops.registry.package import CHECKPOINT
from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

SPLITS_FOLDER = "splits"  # where `promote` logs a run's train/val/test json


def class_set(pairs: Iterable[tuple[int, str]]) -> list[str]:
    """Classes as `name (id N)`: two models agree only if both the names and the dataset ids agree."""
    return sorted(f"{name} (id {class_id})" for class_id, name in pairs)


def dataset_classes(gt: Dataset) -> list[str]:
    return class_set(category_names(gt).items())


def champion_scorer(ws: Workspace, client: MlflowClient, gt: Dataset) -> Callable[[ModelVersion], ChampionScore]:
    """The `score_champion` callback of `promote_version` for today's test split `gt`."""

    def score(mv: ModelVersion) -> ChampionScore:
        name, version = ws.params.mlflow.registered_model, str(mv.version)
        with tempfile.TemporaryDirectory(prefix="detops-champion-") as tmp:
            checkpoint = download_version_file(client, name, version, CHECKPOINT, Path(tmp) / "model")
            metrics, classes = score_checkpoint(ws, checkpoint, gt, f"champion version {version}")
            overlap = train_overlap(client, mv.run_id, gt, Path(tmp) / "splits")
        return ChampionScore(metrics, classes, overlap)

    return score


def score_checkpoint(ws: Workspace, checkpoint: Path, gt: Dataset,
                     who: str) -> tuple[dict[str, float | None], list[str]]:
    """(metrics on `gt`, class set) of a checkpoint; no metrics when its classes are not today's (not comparable)."""
    from detops.evaluation.metrics import coco_metrics
    from detops.inference.dataset import predict_dataset
    from detops.inference.loading import evaluation_thresholds, load_predictor

    evaluate = ws.params.evaluate
    try:
        predictor = load_predictor(checkpoint, evaluation_thresholds(evaluate))
    except Exception as exc:  # fail closed on anything: a corrupt file raises torch's or pickle's own errors
        raise PromotionError(f"{who}: its checkpoint cannot be loaded ({exc}); nothing was promoted. Roll the"
                             " alias back to a loadable version (`detops registry rollback --to VERSION`).") from exc
    classes = class_set(zip(predictor.meta.class_ids, predictor.meta.class_names, strict=True))
    if classes != dataset_classes(gt):
        return {}, classes
    results = predict_dataset(predictor, gt, ws.root, evaluate.batch_size, label=f"re-score {who}")
    return coco_metrics(gt, results, prefix=evaluate.split), classes


def train_overlap(client: MlflowClient, run_id: str | None, gt: Dataset, dst: Path) -> int | None:
    """How many of `gt`'s images were in the train split logged with `run_id` (None: no split file logged)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    try:
        path = client.download_artifacts(run_id, f"{SPLITS_FOLDER}/train.json", str(dst))
        train = read_dataset(Path(path))
    except (MlflowException, OSError, DataError):
        return None
    return len(image_keys(train) & image_keys(gt))


def image_keys(dataset: Dataset) -> set[str]:
    """Each image as `<dataset root>/<file name>`: the same file in two splits of any date has the same key."""
    root = str(dataset.get("info", {}).get("root", ""))
    return {posixpath.normpath(posixpath.join(root, str(im["file_name"]))) for im in dataset["images"]}
