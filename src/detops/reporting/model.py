"""The model sections: training (summary and curves) and evaluation (metrics, per-class AP and the plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detops.reporting.html import badge, esc, facts, join, png, table, tag
from detops.reporting.section import Section

HEADLINE = ("map", "map_50", "map_75", "mar_100")


def training(report: dict[str, Any], curves: Path) -> Section:
    status = esc(f"best val/map {report['val/map']:.4f} at epoch {report['best_epoch']} of {report['epochs']}")
    labels = {"epochs": "epochs run", "best_epoch": "best epoch", "train_seconds": "train seconds",
              "images_per_second": "images / s", "parameters": "parameters"}
    body = join([tag("p", status), facts((labels.get(key, key), value) for key, value in report.items()),
                 png(curves, "training loss and validation mAP per epoch")])
    return Section("training", "Training", status, body)


def metrics(values: dict[str, float | None], evaluation: dict[str, Any] | None, plots: dict[str, Path]) -> Section:
    """`values` is metrics.json (flat `<split>/<name>`); `evaluation` adds the per-class rows when present."""
    split = next(iter(values), "test/").split("/")[0]
    overall = [(key, value) for key, value in values.items() if "/ap/" not in key]
    headline = [f"{key} {values[f'{split}/{key}']:.4f}" for key in HEADLINE
                if values.get(f"{split}/{key}") is not None]
    status = esc(", ".join(headline[:2])) if headline else badge("no score", False)
    parts = [tag("p", join([f"on the {split} split: ", status])),
             table(["metric", "value"], overall, numeric=(1,))]
    if evaluation:
        parts.append(tag("p", f"{evaluation['images']} images, {evaluation['true_boxes']} true boxes, "
                              f"{evaluation['detections']} detections", class_="muted"))
        parts.append(table(["class", "true boxes", "detections", "AP", "AP50"],
                           [[r["name"], r["true_boxes"], r["detections"], r["ap"], r["ap50"]]
                            for r in evaluation["classes"]], numeric=(1, 2, 3, 4)))
    parts += [png(plots["pr_curves"], "precision-recall curves per class"),
              png(plots["confusion"], "confusion matrix"),
              png(plots["predictions"], "predictions on test images")]
    return Section("metrics", "Evaluation", status, join(parts))
