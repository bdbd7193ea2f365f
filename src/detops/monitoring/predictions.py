"""Prediction columns: what the champion answers on each image, summarised so the drift tests can compare it.

Per image: `pred_count` (boxes kept at predict.score_threshold, the serving threshold), `pred_score_mean`,
`pred_score_median`, `pred_low_share` (share of those boxes scoring below monitor.low_score) and
`pred_class_<name>` (share of the boxes per predicted class). An image without boxes has a count of 0 and NaN
elsewhere, as the label columns have (a share of nothing is undefined; the drift tests leave NaN out).

The same columns come from three places, so they compare like with like: the champion's served file run on its
test split at promotion (the reference, logged with the version as `reference/predictions.parquet`), the champion
run on a batch by `detops monitor`, and the answers `detops serve` captured with a batch (`predictions.jsonl`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.dataset.canonical import Dataset
from detops.errors import DataError
from detops.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd


PRED_PREFIX = "pred_"
PRED_CLASS_PREFIX = "pred_class_"
PREDICTIONS_ARTIFACT = "reference/predictions.parquet"  # in the version's training run, logged at registration
BATCH = 8  # images per model call when the monitor or promote runs the champion
CAPTURED_ANSWERS = "predictions.jsonl"  # beside a captured batch's images (not *.json: that reads as COCO labels)


def is_prediction_column(column: str) -> bool:
    return str(column).startswith(PRED_PREFIX)


def prediction_row(boxes: Iterable[tuple[float, str]], classes: Sequence[str], low_score: float) -> dict[str, float]:
    """The columns of one image from its (score, class name) boxes."""
    boxes = list(boxes)
    scores = [score for score, _ in boxes]
    row = {"pred_count": float(len(boxes)), "pred_score_mean": math.nan, "pred_score_median": math.nan,
           "pred_low_share": math.nan}
    row |= {f"{PRED_CLASS_PREFIX}{name}": math.nan for name in classes}
    if boxes:
        row["pred_score_mean"] = statistics.fmean(scores)
        row["pred_score_median"] = statistics.median(scores)
        row["pred_low_share"] = sum(s < low_score for s in scores) / len(scores)
        for name in {*classes, *(n for _, n in boxes)}:
            row[f"{PRED_CLASS_PREFIX}{name}"] = sum(n == name for _, n in boxes) / len(boxes)
    return row


def model_answers(ws: Workspace, model_file: Path, dataset: Dataset, description: str) -> pd.DataFrame:
    """`file_name` and the prediction columns of every image of `dataset` that can be read, by the model in
    `model_file` on the CPU (decoding at the serving threshold, predict.score_threshold). An unreadable image gets no
    row: the feature table skips it too and lists why. An OpenVINO file answers from a process of its own
    (`detops.isolated`: this one never loads OpenVINO)."""
    import pandas as pd

    from detops.isolated import needs_isolation, run_isolated, workspace_args

    args = {**workspace_args(ws), "model_file": str(model_file), "dataset": dataset, "description": description}
    return pd.DataFrame(run_isolated(answer_rows, **args) if needs_isolation(model_file) else answer_rows(**args))


def answer_rows(root: str, params: dict[str, Any], model_file: str, dataset: Dataset,
                description: str) -> list[dict[str, Any]]:
    """`model_answers`' rows, here or in a child."""
    from detops.inference.dataset import image_detections
    from detops.inference.loading import load_predictor
    from detops.isolated import child_workspace

    ws = child_workspace(root, params)
    predictor = load_predictor(Path(model_file), device="cpu")
    predictor = predictor.with_thresholds(score_threshold=ws.params.predict.score_threshold)
    names = list(predictor.meta.class_names)
    low = ws.params.monitor.low_score
    rows = []
    for image, det in image_detections(predictor, dataset, ws.root, BATCH, description, skip_unreadable=True):
        boxes = [(float(s), names[int(c)]) for s, c in zip(det.scores, det.labels, strict=True)]
        rows.append({"file_name": image["file_name"], **prediction_row(boxes, names, low)})
    return rows


@dataclass(frozen=True)
class CapturedAnswer:
    """One line of a captured batch's answers: the image file, the model that answered, its detections."""

    file_name: str
    version: str
    detections: list[dict[str, Any]]
    score_threshold: float  # the server's: it answered with no box below it


def read_captured(batch: Path) -> list[CapturedAnswer] | None:
    """The answers captured with a batch, or None when it has none (a batch delivered by hand)."""
    path = batch / CAPTURED_ANSWERS
    if not path.is_file():
        return None
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the captured answers ({exc.strerror or exc}).") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            out.append(CapturedAnswer(str(entry["file_name"]), str((entry.get("model") or {}).get("version", "")),
                                      list(entry["detections"]), float(entry.get("score_threshold") or 0.0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}, line {number}: not a captured answer ({exc!r}). Fix or delete the line; "
                            "without the file the champion is run on the batch instead.") from None
    return out


def captured_frame(answers: list[CapturedAnswer], classes: Sequence[str], low_score: float,
                   score_threshold: float) -> pd.DataFrame:
    """The prediction columns of captured answers, boxes below `score_threshold` left out (a server may have
    answered with a lower one than today's predict.score_threshold)."""
    import pandas as pd

    rows = []
    for answer in answers:
        boxes = [(float(d["score"]), str(d["class_name"])) for d in answer.detections
                 if float(d["score"]) >= score_threshold]
        rows.append({"file_name": answer.file_name, **prediction_row(boxes, classes, low_score)})
    return pd.DataFrame(rows)


def reference_classes(reference: pd.DataFrame) -> list[str]:
    return [str(c).removeprefix(PRED_CLASS_PREFIX) for c in reference.columns if str(c).startswith(PRED_CLASS_PREFIX)]


def beside(features: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """The feature table with each image's prediction columns added (matched by file name; an image without
    predictions gets NaN there)."""
    if predictions.empty or features.empty:
        return features
    columns = [c for c in predictions.columns if is_prediction_column(c)]
    return features.merge(predictions[["file_name", *columns]].drop_duplicates("file_name"), on="file_name",
                          how="left")


def side_by_side(reference: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """One reference table for the comparison: the image columns (train split) and the prediction columns (test
    split) side by side, row i of each next to the other's row i, the shorter one padded with NaN, which every
    drift test leaves out. Each column is tested on its own, so which rows share a line does not matter; keeping
    the image rows whole keeps the embedding's rows whole."""
    import pandas as pd

    columns = [c for c in predictions.columns if is_prediction_column(c)]
    images = reference.drop(columns=[c for c in reference.columns if is_prediction_column(c)]).reset_index(drop=True)
    return pd.concat([images, predictions[columns].reset_index(drop=True)], axis=1)


@dataclass(frozen=True)
class ChampionPredictions:
    """The champion as the monitor runs it: its prediction reference and its served file."""

    version: str
    reference: pd.DataFrame
    model_file: Path

    @property
    def label(self) -> str:
        return f"champion v{self.version}"


def champion_predictions(ws: Workspace, folder: Path) -> tuple[ChampionPredictions | None, str]:
    """The champion's prediction reference and served file (downloaded into `folder`), or None and why the
    prediction columns are not tested: no registry, no champion, or a champion registered without a reference."""
    from mlflow.exceptions import MlflowException

    from detops.errors import RegistryError
    from detops.registry.aliases import current_champion
    from detops.registry.client import connect
    from detops.registry.files import download_version_file

    skipped = "prediction columns (pred_*) not tested"
    name, alias = ws.params.mlflow.registered_model, ws.params.promote.alias
    try:
        client = connect(ws)
        champion = current_champion(client, name, alias)
    except (RegistryError, MlflowException, OSError) as exc:
        return None, f"{skipped}: the registry cannot be read ({exc})"
    if champion is None:
        return None, f"{skipped}: {name!r} has no {alias!r} version to predict with"
    try:
        local = Path(client.download_artifacts(str(champion.run_id), PREDICTIONS_ARTIFACT, str(folder / "ref")))
        reference = read_prediction_table(local)
    except (MlflowException, OSError, DataError) as exc:
        return None, (f"{skipped}: {alias} v{champion.version} has no usable {PREDICTIONS_ARTIFACT} in run "
                      f"{champion.run_id} ({str(exc)[:200]}); it is logged when `detops promote` registers a version")
    try:
        model_file = download_version_file(client, name, str(champion.version), None, folder / "model")
    except RegistryError as exc:
        return None, f"{skipped}: {exc}"
    return ChampionPredictions(str(champion.version), reference, model_file), ""


def read_prediction_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the prediction reference ({exc}).") from None
    if "pred_count" not in frame.columns or frame.empty:
        raise DataError(f"{path}: not a prediction reference (no rows, or no pred_count column).")
    return frame
