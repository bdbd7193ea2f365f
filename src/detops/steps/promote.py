"""Step `promote`: register the training run's model in MLflow, then gate it against the re-scored champion.

1. Register (once per training run): the pyfunc model of `detops.registry.pyfunc` (checkpoint, accepted
   exports, `reports/export.json`; detops shipped as code) becomes a version of `mlflow.registered_model`,
   tagged with the test metrics, data and split hashes, params hash, git commit and run id. The split files
   are logged to the run. A second `promote` for the same run finds that version and registers nothing.
2. Gate (`registry.transaction.promote_version`, under the promotion lock): the champion's checkpoint is
   downloaded and scored on today's test split by the scorer that scored the candidate (`reports/metrics.json`);
   `champion` moves only if the candidate wins by `promote.min_improvement` and clears `promote.min_metric`. A
   champion trained on other classes is not comparable: the floor alone decides.

Everything a user can get wrong is checked before the registry is touched: no training run recorded, no
`metrics.json`, a metric it lacks, split files changed since training, a tracking server that is down.
Outputs: `reports/promotion.json`, `reports/promotion.md` and the CLI table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import write_json, write_text
from detops.errors import DataError, PromotionError
from detops.registry.decision import metric_text, metric_value
from detops.steps.result import StepResult
from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from detops.dataset.canonical import Dataset
    from detops.registry.package import ModelFiles
    from detops.registry.transaction import Promotion


@dataclass(frozen=True)
class Candidate:
    """What the training run left in the workspace, checked before anything is registered."""

    run_id: str
    metrics: dict[str, float | None]
    files: ModelFiles
    gt: Dataset


def run(ws: Workspace) -> StepResult:
    from detops.registry.client import connect

    started = time.perf_counter()
    candidate = read_candidate(ws)
    client = connect(ws)
    run_ = training_run(ws, client, candidate.run_id)
    promotion, registered = register_and_gate(ws, client, run_, candidate)
    shares = production_shares(ws, candidate)
    seconds = time.perf_counter() - started
    return report(ws, candidate, promotion, registered, shares, seconds)


def production_shares(ws: Workspace, candidate: Candidate) -> dict[str, Any] | None:
    """The candidate on the labelled production shares in its val and test splits: images it did not train on.
    Reported beside the gate, not gated on (the champion's alarm is `monitoring.production`'s)."""
    from detops.dataset.canonical import read_dataset
    from detops.monitoring.production import candidate_on_shares
    from detops.registry.package import CHECKPOINT

    splits = {"val": read_dataset(ws.split_json("val")), ws.params.evaluate.split: candidate.gt}
    return candidate_on_shares(ws, candidate.files.artifacts[CHECKPOINT], splits)


def read_candidate(ws: Workspace) -> Candidate:
    """The run id, test metrics, model files and test split; each missing piece names the step that writes it."""
    from detops.evaluation.scorer import load_split
    from detops.registry.package import model_files
    from detops.tracking import read_run_id, run_record

    run_id = read_run_id(ws)
    if not run_id:
        raise DataError(f"{run_record(ws)}: no training run recorded, so there is nothing to register."
                        " Run `detops train` first.")
    metrics_path = ws.output("evaluate", "metrics")
    if not metrics_path.is_file():
        raise DataError(f"{metrics_path}: the candidate has no test metrics, so it cannot be gated."
                        " Run `detops evaluate` first.")
    try:
        metrics: dict[str, float | None] = json.loads(metrics_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{metrics_path}: not valid json ({exc}); re-run `detops evaluate`.") from None
    metric_value(metrics, ws.params.promote.metric, "candidate")  # an unknown metric fails before any request
    return Candidate(run_id, metrics, model_files(ws, run_id), load_split(ws))


def training_run(ws: Workspace, client: MlflowClient, run_id: str) -> Run:
    """The run `train` recorded, which must be in this store and trained on the split files on disk now."""
    from mlflow.exceptions import MlflowException

    from detops.registry.client import to_registry_error
    from detops.tracking import data_versions, run_record

    try:
        run_ = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise to_registry_error(exc, "reading the training run") from exc
        raise PromotionError(f"{run_record(ws)} names the run {run_id}, which this MLflow store does not have;"
                             " re-run `detops train`, or point MLFLOW_TRACKING_URI at the store it used.") from None
    except OSError as exc:
        raise to_registry_error(exc, "reading the training run") from exc
    now = data_versions(ws, "promote")
    for key in ("data.train_hash", "data.val_hash"):
        then = run_.data.tags.get(key)
        if then and now.get(key) and then != now[key]:
            split = key.removeprefix("data.").removesuffix("_hash")
            raise PromotionError(f"{ws.split_json(split)} changed since the training run {run_id} ({key} {then[:12]}"
                                 f" then, {now[key][:12]} now): the model was not trained on these files."
                                 " Re-run `detops train` and `detops evaluate` before promoting.")
    return run_


def register_and_gate(ws: Workspace, client: MlflowClient, run_: Run,
                      candidate: Candidate) -> tuple[Promotion, bool]:
    """Register the run's version (or find it), then gate it against the champion re-scored on today's split."""
    from detops import tracking
    from detops.registry.client import registry_call
    from detops.registry.rescore import champion_scorer
    from detops.registry.transaction import promote_version
    from detops.registry.versions import register_run

    registry_call(tracking.configure)(ws)  # MLflow resolves a new version's models:/ source through it
    version, registered = register_run(ws, client, run_, candidate.metrics, candidate.files)
    if registered:
        log_reference_table(ws, client, candidate.run_id)
        log_prediction_reference(ws, client, candidate)
    promotion = promote_version(client, ws, str(version.version), candidate.metrics,
                                score_champion=champion_scorer(ws, client, candidate.gt))
    return promotion, registered


def log_reference_table(ws: Workspace, client: MlflowClient, run_id: str) -> None:
    """The train split's image features, logged with the version: once it is champion, `detops monitor`
    compares new data with them without the old images or a re-computation."""
    import tempfile

    from detops.dataset.canonical import read_dataset
    from detops.monitoring.reference import REFERENCE_ARTIFACT, reference_features

    frame = reference_features(ws, read_dataset(ws.split_json("train")))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        frame.to_parquet(path)
        client.log_artifact(run_id, str(path), str(Path(REFERENCE_ARTIFACT).parent))


def log_prediction_reference(ws: Workspace, client: MlflowClient, candidate: Candidate) -> None:
    """The served file's answers on the test split, one row per image (`monitoring.predictions`), logged with the
    version: once it is champion, `detops monitor` compares the answers on new data with them."""
    import tempfile

    from detops.monitoring.predictions import PREDICTIONS_ARTIFACT, model_answers

    frame = model_answers(ws, candidate.files.artifacts[candidate.files.serve], candidate.gt, "Prediction reference")
    if frame.empty:
        raise DataError(f"none of the {len(candidate.gt['images'])} test images can be read, so the version has no"
                        " prediction reference; fix the test split and promote again.")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(PREDICTIONS_ARTIFACT).name
        frame.to_parquet(path)
        client.log_artifact(candidate.run_id, str(path), str(Path(PREDICTIONS_ARTIFACT).parent))


def report(ws: Workspace, candidate: Candidate, promotion: Promotion, registered: bool,
           shares: dict[str, Any] | None, seconds: float) -> StepResult:
    """reports/promotion.json and .md, and the CLI summary: the decision, both numbers, threshold, reason, and the
    candidate on the production shares it did not train on."""
    from detops.monitoring.production import shares_text

    name, d = ws.params.mlflow.registered_model, promotion.decision
    uri = f"models:/{name}/{promotion.version}"
    how = "registered as new version" if registered else "already registered as version"
    registration = (f"run {candidate.run_id} {how} {promotion.version} of {name!r} ({uri},"
                    f" serves {candidate.files.serve})")
    payload: dict[str, Any] = {
        "model": name, "model_uri": uri, "run_id": candidate.run_id, "registered": registered,
        "serve": candidate.files.serve, "artifacts": sorted(candidate.files.artifacts),
        **promotion.to_dict(), "production_shares": shares, "seconds": round(seconds, 3),
    }
    files = ws.outputs("promote")
    write_json(files["decision"], payload)
    write_text(files["summary"], promotion.to_markdown() + f"\n\nCandidate mAP on production shares it did not "
               f"train on: {shares_text(shares)}.\n\n{registration}.\n")

    champion = promotion.champion_version
    if champion is None:
        champion_text = "no champion"
    elif champion == promotion.version:
        champion_text = f"{metric_text(d.champion_value)} (v{champion}: the candidate itself)"
    else:
        champion_text = (f"{metric_text(d.champion_value)} (v{champion}, re-scored on today's "
                         f"{ws.params.evaluate.split} split)")
    metrics: dict[str, Any] = {
        "version": promotion.version,
        "decision": "promoted" if d.promote else "not promoted",
        f"candidate {d.metric}": metric_text(d.candidate_value),
        f"champion {d.metric}": champion_text,
        "threshold": metric_text(d.threshold),
        "candidate mAP on production shares": shares_text(shares),
        "champion's train images in today's test": "-" if d.overlap is None else d.overlap,
        f"{ws.params.promote.alias} now": f"v{promotion.aliases.champion}" if promotion.aliases.champion else "none",
        "seconds": f"{seconds:.1f}",
    }
    notes = [d.reason, registration, *candidate.files.notes, *promotion.aliases.notes]
    return StepResult(step="promote", outputs={k: ws.relative(p) for k, p in files.items()}, metrics=metrics,
                      notes=notes)
