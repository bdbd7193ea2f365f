"""Step `evaluate`: COCO metrics of the trained model on one split, plots, a report, and MLflow logging.

Two halves so the evaluation is testable without a model: `run` predicts with the checkpoint, then
`evaluate_predictions` scores any COCO results against the split and writes every output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detops.atomic import write_json
from detops.dataset.canonical import Dataset, category_names, read_dataset
from detops.errors import DataError, TrainingError
from detops.evaluation.metrics import CocoResult, check_detections, compute_coco, flat_metrics
from detops.steps.result import StepResult
from detops.workspace import Workspace


@dataclass
class Evaluation:
    """What `evaluate_predictions` measured and wrote (paths absolute)."""

    metrics: dict[str, float | None]
    result: CocoResult
    classes: list[dict[str, Any]]
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)


def output_paths(ws: Workspace) -> dict[str, Path]:
    """Every file the step writes, as the step graph declares them."""
    from detops.pipeline import output_paths as declared

    return declared(ws, "evaluate")


def find_checkpoint(ws: Workspace) -> Path:
    """models/best.ckpt, else models/last.ckpt (an interrupted training still has one)."""
    for name in ("best.ckpt", "last.ckpt"):
        path = ws.models / name
        if path.is_file():
            return path
    raise TrainingError(f"{ws.models / 'best.ckpt'}: no checkpoint (nor last.ckpt). Run `detops train` first.")


def load_split(ws: Workspace) -> Dataset:
    split = ws.params.evaluate.split
    path = ws.split_json(split)
    if not path.is_file():
        raise DataError(f"{path}: the {split!r} split file is missing (evaluate.split = {split}). "
                        "Run `detops split` first.")
    gt = read_dataset(path)
    if not gt["images"]:
        raise DataError(f"{path}: the {split!r} split has no images; nothing to evaluate. "
                        "Change split ratios or evaluate.split.")
    return gt


def evaluate_predictions(ws: Workspace, gt: Dataset, predictions: list[dict[str, Any]]) -> Evaluation:
    """Score COCO results against `gt` and write metrics, report, detections and plots atomically."""
    from detops.evaluation.confusion import background_label, confusion_pairs, write_confusion
    from detops.evaluation.drawing import prediction_grid
    from detops.evaluation.pr_curves import write_pr_curves
    from detops.evaluation.report import class_rows

    params = ws.params.evaluate
    split = params.split
    detections = check_detections(gt, predictions)
    result = compute_coco(gt, detections)
    metrics = flat_metrics(result, gt, prefix=split)
    names = category_names(gt)
    rows = class_rows(gt, detections, result, names, params.plot_score_threshold)
    files = output_paths(ws)

    write_pr_curves(result, names, files["pr_curves_data"], files["pr_curves"])
    labels = [names[c] for c in sorted(names)] + [background_label(names)]
    pairs = confusion_pairs(gt, detections, names, params.plot_score_threshold, params.confusion_iou)
    counts = write_confusion(
        pairs, labels, files["confusion_data"], files["confusion"],
        title=f"{split}: score ≥ {params.plot_score_threshold:g}, IoU ≥ {params.confusion_iou:g}",
    )
    prediction_grid(gt, detections, names, ws.root, params.num_sample_images, params.plot_score_threshold,
                    files["predictions"])
    write_json(files["detections"], detections, indent=None)
    write_json(files["report"], {
        "split": split,
        "split_file": ws.relative(ws.split_json(split)),
        "images": len(gt["images"]),
        "true_boxes": len(gt["annotations"]),
        "detections": len(detections),
        "params": params.model_dump(mode="json"),
        "metrics": metrics,
        "classes": rows,
        "confusion": {"labels": labels, "counts": counts},
    })
    write_json(files["metrics"], metrics)  # last: its presence means the whole evaluation was written

    notes = []
    undefined = [row["name"] for row in rows if row["ap"] is None]
    if undefined:
        notes.append(f"no ground truth in {split} for {', '.join(undefined)}: AP is null (undefined), not 0")
    return Evaluation(metrics=metrics, result=result, classes=rows, files=files, notes=notes)


def score_checkpoint(ws: Workspace, checkpoint: Path, gt: Dataset) -> list[dict[str, Any]]:
    """COCO results of the checkpoint on `gt`, through the predictor every exported variant uses too."""
    from detops.inference.dataset import predict_dataset
    from detops.inference.loading import evaluation_thresholds, load_predictor

    predictor = load_predictor(checkpoint, evaluation_thresholds(ws.params.evaluate))
    return predict_dataset(predictor, gt, ws.root, ws.params.evaluate.batch_size)


def run(ws: Workspace) -> StepResult:
    from detops.console import out_console
    from detops.evaluation.mlflow_log import log_evaluation
    from detops.evaluation.report import HEADLINE, summary_table

    gt = load_split(ws)
    checkpoint = find_checkpoint(ws)
    predictions = score_checkpoint(ws, checkpoint, gt)
    evaluation = evaluate_predictions(ws, gt, predictions)
    files = evaluation.files
    logged = log_evaluation(ws, evaluation.metrics, {
        "plots": [files[k] for k in ("pr_curves", "pr_curves_data", "confusion", "confusion_data", "predictions")],
        "evaluation": [files["metrics"], files["report"]],
    })
    split = ws.params.evaluate.split
    out_console().print(summary_table(split, evaluation.result, evaluation.classes,
                                      ws.params.evaluate.plot_score_threshold))
    notes = [f"checkpoint {ws.relative(checkpoint)}", *evaluation.notes, logged.note]
    return StepResult(
        step="evaluate",
        outputs={name: ws.relative(path) for name, path in files.items()},
        metrics={f"{split}/{key}": evaluation.metrics[f"{split}/{key}"] for key in HEADLINE},
        notes=notes,
    )
