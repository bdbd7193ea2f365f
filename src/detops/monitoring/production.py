"""The champion's accuracy on the images it serves: before a labelled batch is accepted, the champion (and the
challenger, when there is one) score the batch's accuracy share with the one scorer.

The share is the random part of a batch pushed to Label Studio (`label.accuracy_share`, recorded in the round trip's
state, labelled without pre-annotations); a labelled batch that landed without Label Studio is scored whole; a review
of flagged labels is not a sample of the traffic and is not scored. Each score has a seeded 90 % bootstrap interval
over images (`detops.evaluation.bootstrap`). A share under `monitor.min_labelled_images` is scored and marked too
small; otherwise the champion's score raises the alarm when the interval's upper end falls below its own test mAP
minus `monitor.max_accuracy_drop`, or below `monitor.min_production_map`. The flow announces it
(`detops.accuracy.dropped`); nothing here starts a retraining.

An accepted batch's copy lists its share (`detops.monitoring.share`), so the share's images carry
`accuracy_share` through import and split; `promote` scores the candidate on those in its val and test splits
(`candidate_on_shares`): its accuracy on production images it did not train on, beside the gate.

Written to `reports/production/<batch>.json` (the champion's numbers at the top: `version`, `batch`, `map`,
`map_50`, `interval`, `images`, `too_small`, `alarm`; every scored model under `models`) and logged to MLflow, one
run named `production` per registered version (`detops.production_version` tag), step = the batch's order there.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import write_json
from detops.errors import ClassSetMismatch, RegistryError
from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from detops.dataset.canonical import Dataset
    from detops.evaluation.scorer import Scorer
    from detops.monitoring.batches import BatchData

ALIASES = ("champion", "challenger")
RUN_NAME = "production"
VERSION_TAG = "detops.production_version"
TABLE = "production_batches.json"
SEED = 0


@dataclass(frozen=True)
class ProductionScore:
    """One registered version on one batch's share."""

    alias: str
    version: str
    batch: str
    images: int
    map: float | None
    map_50: float | None
    ap: dict[str, float | None]
    interval: list[float] | None  # [low, high] of the 90 % bootstrap interval of map
    test_map: float | None  # the version's own test mAP (its training run)
    too_small: bool
    alarm: list[str] = field(default_factory=list)  # why the alarm went off (champion only); empty: no alarm


def production_folder(ws: Workspace) -> Path:
    return ws.reports / "production"


def report_path(ws: Workspace, batch: str) -> Path:
    return production_folder(ws) / f"{batch}.json"


def chart_path(ws: Workspace) -> Path:
    return production_folder(ws) / "accuracy.png"


def share_of(ws: Workspace, data: BatchData) -> tuple[Dataset | None, str]:
    """The labelled images of `data` that measure accuracy, and what they are; None (and why) when there are none."""
    from detops.dataset.canonical import subset
    from detops.labeling.state import load_state
    from detops.monitoring.batches import ledger

    entry = ledger(ws).entries().get(data.batch.name, {})
    if entry.get("reviewed_from"):
        return None, "a review of flagged labels, not a sample of the traffic: not scored"
    origin = entry.get("labelled_from")
    if not origin:
        return data.dataset, "the whole batch (labelled on landing)"
    state = load_state(ws, str(origin))
    share = set(state.accuracy_share if state is not None else [])
    if not share:
        return None, f"pushed from {origin} with no accuracy share (label.accuracy_share = 0 then): not scored"
    ids = [im["id"] for im in data.dataset["images"] if str(im["file_name"]) in share]
    return subset(data.dataset, ids), f"the accuracy share of {origin} ({len(ids)} of {len(data.dataset['images'])})"


def candidate_on_shares(ws: Workspace, checkpoint: Path, splits: dict[str, Dataset]) -> dict[str, Any] | None:
    """The candidate's mAP, mAP@0.5 and 90 % interval on the share images of `splits` (its val and test: images it
    did not train on), with their count and batches; None when no share image is there."""
    from detops.evaluation.bootstrap import bootstrap_map
    from detops.monitoring.share import SHARE_KEY

    parts = [(name, im) for name, split in splits.items() for im in split["images"] if im.get(SHARE_KEY)]
    if not parts:
        return None
    ids = {im["id"] for _, im in parts}  # one dataset's ids: unique across its splits
    gt: Dataset = {**next(iter(splits.values())), "images": [im for _, im in parts],
                   "annotations": [a for split in splits.values() for a in split["annotations"]
                                   if a["image_id"] in ids]}
    scorer = production_scorer(ws, gt, f"the production shares of the {'/'.join(splits)} splits")
    score = scorer.score(checkpoint, who="the candidate", label="Candidate on production shares")
    interval = bootstrap_map(gt, score.detections, seed=SEED)
    return {"images": len(parts), "splits": sorted({name for name, _ in parts}),
            "batches": sorted({str(im.get("batch")) for _, im in parts if im.get("batch")}),
            "map": score.result.summary["map"], "map_50": score.result.summary["map_50"],
            "interval": None if interval is None else [interval.low, interval.high],
            "too_small": len(parts) < ws.params.monitor.min_labelled_images}


def production_scorer(ws: Workspace, gt: Dataset, what: str) -> Scorer:
    """The one scorer, with the evaluation's thresholds and batch size, on labelled production images (`what`)."""
    from detops.evaluation.scorer import Scorer
    from detops.inference.loading import evaluation_thresholds

    return Scorer(gt, "production", what, ws.root, evaluation_thresholds(ws.params.evaluate),
                  ws.params.evaluate.batch_size)


def shares_text(shares: dict[str, Any] | None) -> str:
    """The candidate's production-share line of the promotion summary."""
    if shares is None:
        return "- (no production share outside its training split)"
    shown = "n/a" if shares["map"] is None else f"{shares['map']:.4f}"
    interval = "" if shares["interval"] is None else f" [{shares['interval'][0]:.3f}, {shares['interval'][1]:.3f}]"
    small = ", too few to judge" if shares["too_small"] else ""
    return (f"{shown}{interval} on {shares['images']} image(s) of {len(shares['batches'])} batch(es) "
            f"({'/'.join(shares['splits'])}{small})")


def score_batch(ws: Workspace, data: BatchData) -> tuple[Path | None, list[str]]:
    """Score the batch's share with the champion and the challenger; write and log the report. (report, notes);
    no report when there is nothing to score or no champion."""
    gt, what = share_of(ws, data)
    if gt is None or not gt["images"]:
        return None, [f"production accuracy: {what}"]
    from detops.registry.aliases import current_champion
    from detops.registry.client import connect

    client = connect(ws)
    name = ws.params.mlflow.registered_model
    try:
        versions = {alias: current_champion(client, name, alias) for alias in ALIASES}
    except RegistryError as exc:
        return None, [f"production accuracy not measured: {exc}"]
    if versions["champion"] is None:
        return None, ["production accuracy not measured: no champion yet"]
    scores, notes = [], []
    for alias, mv in versions.items():
        if mv is None:
            continue
        try:
            scores.append(score_version(ws, client, alias, str(mv.version), mv.run_id, data.batch.name, gt))
        except ClassSetMismatch as exc:
            notes.append(f"production accuracy of the {alias} (version {mv.version}) not measured: {exc}")
    if not scores:
        return None, notes
    champion = scores[0]
    path = write_json(report_path(ws, data.batch.name), {
        "batch": champion.batch, "version": champion.version, "map": champion.map, "map_50": champion.map_50,
        "interval": champion.interval, "images": champion.images, "too_small": champion.too_small,
        "test_map": champion.test_map, "alarm": champion.alarm, "scored": what, "scored_at": time.time(),
        "models": [asdict(s) for s in scores]})
    for score in scores:
        log_score(ws, client, score)
    from detops.monitoring.production_plot import plot_production

    plot_production(read_reports(ws), chart_path(ws))
    notes.append(f"production accuracy on {what}: {summary(champion)} ({ws.relative(path)})")
    return path, notes


def score_version(ws: Workspace, client: MlflowClient, alias: str, version: str, run_id: str | None, batch: str,
                  gt: Dataset) -> ProductionScore:
    """Version `version` on `gt` through the one scorer, its interval, and the alarm (the champion's)."""
    from detops.evaluation.bootstrap import bootstrap_map
    from detops.evaluation.metrics import metric_class_names
    from detops.registry.files import download_version_file
    from detops.registry.package import CHECKPOINT

    scorer = production_scorer(ws, gt, f"batch {batch}")
    with tempfile.TemporaryDirectory(prefix="detops-production-") as tmp:
        checkpoint = download_version_file(client, ws.params.mlflow.registered_model, version, CHECKPOINT, Path(tmp))
        who = f"{alias} version {version}"
        score = scorer.score(checkpoint, who=who, label=f"production accuracy of {who}")
    interval = bootstrap_map(gt, score.detections, seed=SEED)
    test_map = client.get_run(run_id).data.metrics.get("test/map") if run_id else None
    images = len(gt["images"])
    out = ProductionScore(
        alias, version, batch, images, score.result.summary["map"], score.result.summary["map_50"],
        {name: score.result.ap.get(cid) for cid, name in metric_class_names(gt).items()},
        None if interval is None else [interval.low, interval.high], test_map,
        too_small=images < ws.params.monitor.min_labelled_images)
    return replace(out, alarm=alarm(ws, out)) if alias == "champion" else out


def alarm(ws: Workspace, score: ProductionScore) -> list[str]:
    """Why the score is an accuracy drop (empty: it is not): the interval's upper end below the version's test mAP
    minus monitor.max_accuracy_drop, or below monitor.min_production_map. Never on a share too small."""
    params = ws.params.monitor
    if score.too_small or score.interval is None:
        return []
    high = score.interval[1]
    reasons = []
    if score.test_map is not None and high < score.test_map - params.max_accuracy_drop:
        reasons.append(f"upper end {high:.3f} of the 90 % interval is below test mAP {score.test_map:.3f} minus "
                       f"monitor.max_accuracy_drop {params.max_accuracy_drop:g}")
    if params.min_production_map > 0 and high < params.min_production_map:
        reasons.append(f"upper end {high:.3f} of the 90 % interval is below monitor.min_production_map "
                       f"{params.min_production_map:g}")
    return reasons


def summary(score: ProductionScore) -> str:
    """One line: the version's mAP, interval, image count and, where it applies, the alarm or the small share."""
    shown = "n/a" if score.map is None else f"{score.map:.3f}"
    interval = "" if score.interval is None else f" [{score.interval[0]:.3f}, {score.interval[1]:.3f}]"
    test = "" if score.test_map is None else f", test mAP {score.test_map:.3f}"
    flag = " (too small to alarm on)" if score.too_small else (" ACCURACY DROPPED" if score.alarm else "")
    return f"{score.alias} version {score.version} mAP {shown}{interval} on {score.images} image(s){test}{flag}"


def log_score(ws: Workspace, client: MlflowClient, score: ProductionScore) -> None:
    """The score as the next step of the version's `production` run (found by tag, created the first time); a batch
    logged before keeps its step and is not logged twice."""
    import mlflow
    from mlflow.entities import Metric

    from detops.tracking import configure

    experiment_id = configure(ws)
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{VERSION_TAG}` = '{score.version}'",
                              max_results=1)
    if runs:
        run_id = runs[0].info.run_id
    else:
        run_id = client.create_run(experiment_id, run_name=RUN_NAME, tags={
            VERSION_TAG: score.version, "detops.step": RUN_NAME,
            "mlflow.note.content": f"Accuracy of {ws.params.mlflow.registered_model} version {score.version} on "
                                   "labelled production batches (step = batch order)."}).info.run_id
        if score.test_map is not None:
            client.log_metric(run_id, "test/map", score.test_map)
    logged = logged_batches(client, run_id)
    if score.batch in logged:
        return
    step = len(logged)
    values = {"production/map": score.map, "production/map_50": score.map_50, "production/images": score.images,
              "production/map_low": score.interval[0] if score.interval else None,
              "production/map_high": score.interval[1] if score.interval else None}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items() if v is not None])
    mlflow.log_table({"step": [step], "batch": [score.batch], "images": [score.images],
                      "too_small": [score.too_small], "alarm": ["; ".join(score.alarm)]}, TABLE, run_id=run_id)


def logged_batches(client: MlflowClient, run_id: str) -> list[str]:
    """The batches of the `production` run's table, in step order (none before the first)."""
    if TABLE not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        return []
    with tempfile.TemporaryDirectory(prefix="detops-production-table-") as tmp:
        path = client.download_artifacts(run_id, TABLE, tmp)
        table = json.loads(Path(path).read_text(encoding="utf-8"))
    column = table["columns"].index("batch")
    return [str(row[column]) for row in table["data"]]


def read_reports(ws: Workspace) -> list[dict[str, Any]]:
    """Every batch's production report, in the order the batches were scored."""
    folder = production_folder(ws)
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))] \
        if folder.is_dir() else []
    return sorted(reports, key=lambda r: float(r.get("scored_at", 0)))
