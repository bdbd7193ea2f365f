"""Step `evaluate`: COCO metrics of the trained model on one split, plots, a report, and MLflow logging.

Two halves so the evaluation is testable without a model: `run` scores the checkpoint with the one scorer
(`detops.evaluation.scorer`), then `write_evaluation` writes every output of a score; `evaluate_predictions`
does the same for any COCO results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import write_json
from detops.dataset.canonical import Dataset, category_names
from detops.evaluation.metrics import CocoResult
from detops.steps.result import StepResult
from detops.workspace import Workspace

if TYPE_CHECKING:
    from detops.evaluation.scorer import Score


@dataclass
class Evaluation:
    """What `write_evaluation` measured and wrote (paths absolute)."""

    metrics: dict[str, float | None]
    result: CocoResult
    classes: list[dict[str, Any]]
    files: dict[str, Path]
    notes: list[str] = field(default_factory=list)


def evaluate_predictions(ws: Workspace, gt: Dataset, predictions: list[dict[str, Any]]) -> Evaluation:
    """Score COCO results against `gt` as the scorer scores a model, and write every output."""
    from detops.evaluation.scorer import Scorer

    return write_evaluation(ws, gt, Scorer.of(ws, gt).measure(predictions))


def write_evaluation(ws: Workspace, gt: Dataset, score: Score) -> Evaluation:
    """Metrics, report, detections and plots of a score on `gt`, each written atomically."""
    from detops.evaluation.confusion import background_label, confusion_pairs, write_confusion
    from detops.evaluation.drawing import prediction_grid
    from detops.evaluation.pr_curves import write_pr_curves
    from detops.evaluation.report import class_rows

    params = ws.params.evaluate
    split = params.split
    detections, result, metrics = score.detections, score.result, score.metrics
    names = category_names(gt)
    rows = class_rows(gt, detections, result, names, params.plot_score_threshold)
    files = ws.outputs("evaluate")

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


def run(ws: Workspace) -> StepResult:
    from detops.console import out_console
    from detops.evaluation.mlflow_log import log_evaluation
    from detops.evaluation.report import HEADLINE, summary_table
    from detops.evaluation.scorer import Scorer

    scorer = Scorer.of(ws)
    checkpoint = ws.checkpoint()
    evaluation = write_evaluation(ws, scorer.gt, scorer.score(checkpoint))
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
