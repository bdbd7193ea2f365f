"""Per-class precision-recall curves at IoU 0.5, straight from COCOeval's precision array.

COCO samples precision at 101 recall thresholds (0, 0.01, ..., 1) after making it monotone, and puts 0
past the highest recall reached: the drop to 0 is where the detector stops finding boxes of that class.
Classes without ground truth have no curve.
"""

from __future__ import annotations

from pathlib import Path

from detops.evaluation.metrics import CocoResult
from detops.evaluation.plotfiles import message_figure, new_figure, save_png, write_csv

PR_COLUMNS = ("class", "recall", "precision")


def pr_rows(result: CocoResult, names: dict[int, str]) -> list[tuple[str, float, float]]:
    """(class, recall, precision) rows, classes in id order: the DVC plots data file."""
    return [
        (names[class_id], round(recall, 4), round(precision, 6))
        for class_id, curve in sorted(result.pr_curves.items())
        for recall, precision in zip(result.recall_thresholds, curve, strict=True)
    ]


def write_pr_curves(result: CocoResult, names: dict[int, str], csv_path: Path, png_path: Path) -> None:
    write_csv(csv_path, PR_COLUMNS, pr_rows(result, names))
    if not result.pr_curves:
        message_figure("No precision-recall curve: no class has ground-truth boxes in this split.", png_path)
        return
    fig = new_figure(7, 5)
    ax = fig.add_subplot()
    for class_id, curve in sorted(result.pr_curves.items()):
        ap50 = result.ap50.get(class_id)
        label = f"{names[class_id]} (AP50 {ap50:.3f})" if ap50 is not None else names[class_id]
        ax.plot(result.recall_thresholds, curve, label=label, linewidth=1.5)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="Precision-recall per class at IoU 0.5")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small", ncols=2 if len(result.pr_curves) > 8 else 1)
    save_png(fig, png_path)
