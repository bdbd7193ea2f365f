"""The evaluation report: per-class numbers people read first, as JSON and as a one-screen table."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from detops.dataset.canonical import Dataset
from detops.evaluation.metrics import CocoResult, Detection

if TYPE_CHECKING:
    from rich.table import Table

HEADLINE = ("map", "map_50", "map_75", "mar_100")


def class_rows(
    gt: Dataset, detections: list[Detection], result: CocoResult, names: dict[int, str], score_threshold: float
) -> list[dict[str, Any]]:
    """One row per dataset class: box counts, AP@[.5:.95] and AP50 (None where the class has no truth)."""
    true_boxes = Counter(int(a["category_id"]) for a in gt["annotations"])
    kept = Counter(int(d["category_id"]) for d in detections if d["score"] >= score_threshold)
    return [
        {
            "id": class_id,
            "name": name,
            "true_boxes": true_boxes[class_id],
            "detections": kept[class_id],
            "ap": result.ap.get(class_id),
            "ap50": result.ap50.get(class_id),
        }
        for class_id, name in sorted(names.items())
    ]


def summary_table(split: str, result: CocoResult, rows: list[dict[str, Any]], score_threshold: float) -> Table:
    """Headline metrics in the title, one line per class: fits one screen for a few dozen classes."""
    from rich.table import Table

    head = "  ".join(f"{key} {_fmt(result.summary[key])}" for key in HEADLINE)
    table = Table(title=f"evaluate on {split}: {head}", title_justify="left")
    table.add_column("class")
    table.add_column("true boxes", justify="right")
    table.add_column(f"detections ≥ {score_threshold:g}", justify="right")
    table.add_column("AP", justify="right")
    table.add_column("AP50", justify="right")
    for row in rows:
        table.add_row(row["name"], str(row["true_boxes"]), str(row["detections"]), _fmt(row["ap"]), _fmt(row["ap50"]))
    return table


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
