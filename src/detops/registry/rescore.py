"""Score the champion again, on today's test split, exactly as `evaluate` scored the candidate: its own checkpoint
through the one scorer (`detops.evaluation.scorer`).

The number recorded when the champion was promoted came from the test split of its day; comparing it with a
candidate scored on a newer split would compare two different exams. Fail closed: a champion whose checkpoint
cannot be downloaded or loaded raises, and `promote_version` then promotes nothing. A champion trained on other
classes than today's split cannot be scored on it (the scorer's `ClassSetMismatch`): it is not comparable, and
the floor alone decides.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from detops.dataset.canonical import Dataset, read_dataset
from detops.errors import ClassSetMismatch, DataError, PromotionError
from detops.registry.files import download_version_file
from detops.registry.names import SPLITS_FOLDER
from detops.registry.package import CHECKPOINT
from detops.registry.transaction import ChampionScore
from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from detops.evaluation.scorer import Scorer



def champion_scorer(ws: Workspace, client: MlflowClient, gt: Dataset) -> Callable[[ModelVersion], ChampionScore]:
    """The `score_champion` callback of `promote_version` for today's test split `gt`."""
    from detops.evaluation.scorer import Scorer

    scorer = Scorer.of(ws, gt)

    def score(mv: ModelVersion) -> ChampionScore:
        name, version = ws.params.mlflow.registered_model, str(mv.version)
        with tempfile.TemporaryDirectory(prefix="detops-champion-") as tmp:
            checkpoint = download_version_file(client, name, version, CHECKPOINT, Path(tmp) / "model")
            rescored = rescore(scorer, checkpoint, f"champion version {version}")
            overlap = train_overlap(client, mv.run_id, ws.split_json("train").name, gt, Path(tmp) / "splits")
        return ChampionScore(rescored.metrics, rescored.not_comparable, overlap)

    return score


def rescore(scorer: Scorer, checkpoint: Path, who: str) -> ChampionScore:
    """The champion's checkpoint scored by `scorer`; no metrics, and why, when its classes are not the split's."""
    try:
        predictor = scorer.load(checkpoint)
    except Exception as exc:  # fail closed on anything: a corrupt file raises torch's or pickle's own errors
        raise PromotionError(f"{who}: its checkpoint cannot be loaded ({exc}); nothing was promoted. Roll the"
                             " alias back to a loadable version (`detops registry rollback --to VERSION`).") from exc
    try:
        return ChampionScore(scorer.score(predictor, who=who, label=f"re-score {who}").metrics)
    except ClassSetMismatch as exc:
        return ChampionScore({}, not_comparable=f"{who} was trained on other classes ({exc.difference})")


def train_overlap(client: MlflowClient, run_id: str | None, train_file: str, gt: Dataset, dst: Path) -> int | None:
    """How many of `gt`'s images were in the train split file `train_file` logged with `run_id` (None: no such
    file logged)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    dst.mkdir(parents=True, exist_ok=True)
    try:
        path = client.download_artifacts(run_id, f"{SPLITS_FOLDER}/{train_file}", str(dst))
        train = read_dataset(Path(path))
    except (MlflowException, OSError, DataError):
        return None
    return len(image_keys(train) & image_keys(gt))


def image_keys(dataset: Dataset) -> set[str]:
    """Each image as `<dataset root>/<file name>`: the same file in two splits of any date has the same key."""
    root = str(dataset.get("info", {}).get("root", ""))
    return {posixpath.normpath(posixpath.join(root, str(im["file_name"]))) for im in dataset["images"]}
