"""Detection confusion matrix: which class the model says for each true box, and what it invents.

Detections at or above the score threshold are matched greedily, highest score first, to the still
unmatched true box of *any* class with the highest IoU (at least `iou`), so a box found with the wrong
class shows up off the diagonal. A detection matched to nothing is a false positive (actual =
background); a true box matched by nothing is missed (predicted = background).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from detops.dataset.canonical import Dataset
from detops.evaluation.metrics import Detection, xyxy_tensor
from detops.evaluation.plotfiles import new_figure, save_png, write_csv

CONFUSION_COLUMNS = ("actual", "predicted")


def background_label(names: dict[int, str]) -> str:
    """'background', unless a real class is called that."""
    label = "background"
    while label in names.values():
        label = f"_{label}_"
    return label


def confusion_pairs(
    gt: Dataset, detections: list[Detection], names: dict[int, str], score_threshold: float, iou: float
) -> list[tuple[str, str]]:
    """One (actual, predicted) pair per true box and per kept detection: DVC's confusion data format."""
    from torchvision.ops import box_iou

    background = background_label(names)
    dets_by_image: dict[int, list[Detection]] = defaultdict(list)
    for det in detections:
        if det["score"] >= score_threshold:
            dets_by_image[int(det["image_id"])].append(det)
    anns_by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt["annotations"]:
        anns_by_image[int(ann["image_id"])].append(ann)

    pairs: list[tuple[str, str]] = []
    for image in sorted(gt["images"], key=lambda im: int(im["id"])):
        anns = anns_by_image.get(int(image["id"]), [])
        dets = sorted(dets_by_image.get(int(image["id"]), []), key=lambda d: -d["score"])
        ious = box_iou(xyxy_tensor([d["bbox"] for d in dets]), xyxy_tensor([a["bbox"] for a in anns]))
        matched: set[int] = set()
        for i, det in enumerate(dets):
            candidates = [(float(ious[i, j]), j) for j in range(len(anns)) if j not in matched]
            best_iou, best = max(candidates, default=(0.0, -1))
            if best >= 0 and best_iou >= iou:
                matched.add(best)
                pairs.append((names[int(anns[best]["category_id"])], names[int(det["category_id"])]))
            else:
                pairs.append((background, names[int(det["category_id"])]))
        pairs += [(names[int(a["category_id"])], background) for j, a in enumerate(anns) if j not in matched]
    return pairs


def confusion_counts(pairs: list[tuple[str, str]], labels: list[str]) -> list[list[int]]:
    """Matrix [actual][predicted] over `labels` (classes then background)."""
    index = {label: i for i, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for actual, predicted in pairs:
        counts[index[actual]][index[predicted]] += 1
    return counts


def write_confusion(pairs: list[tuple[str, str]], labels: list[str], csv_path: Path, png_path: Path,
                    title: str) -> list[list[int]]:
    """The DVC data file and a heatmap (colour = share of the actual row, text = count)."""
    write_csv(csv_path, CONFUSION_COLUMNS, pairs)
    counts = confusion_counts(pairs, labels)
    size = max(4.0, 0.55 * len(labels) + 2.5)
    fig = new_figure(size + 1, size)
    ax = fig.add_subplot()
    shares = [[c / max(sum(row), 1) for c in row] for row in counts]
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for r, row in enumerate(counts):
        for c, count in enumerate(row):
            if count:
                ax.text(c, r, str(count), ha="center", va="center", fontsize="small",
                        color="white" if shares[r][c] > 0.5 else "black")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(ticks, labels, fontsize="small")
    ax.set(xlabel="predicted", ylabel="actual", title=title)
    fig.colorbar(image, ax=ax, label="share of the actual class", shrink=0.8)
    save_png(fig, png_path)
    return counts
