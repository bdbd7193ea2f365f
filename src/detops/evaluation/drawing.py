"""A grid of evaluated images with true boxes and confident predictions drawn over them."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from detops.dataset.canonical import Dataset, image_path
from detops.errors import DataError
from detops.evaluation.metrics import Detection
from detops.evaluation.plotfiles import message_figure, new_figure, save_png

TRUE_COLOUR = "#00d000"
PRED_COLOUR = "#ff2a2a"
MAX_SIDE = 640  # images are shrunk before drawing: the grid is for looking, not measuring


def sample_images(gt: Dataset, count: int) -> list[dict[str, Any]]:
    """`count` images spread evenly over the split (same split, same images: plots compare across runs)."""
    images = sorted(gt["images"], key=lambda im: int(im["id"]))
    if count <= 0:
        return []
    if count >= len(images):
        return images
    step = len(images) / count
    return [images[int(i * step)] for i in range(count)]


def prediction_grid(
    gt: Dataset,
    detections: list[Detection],
    names: dict[int, str],
    workspace_root: Path,
    count: int,
    score_threshold: float,
    target: Path,
) -> Path:
    """Draw `count` images: true boxes (green) and predictions >= `score_threshold` (red, class + score)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle
    from PIL import Image

    images = sample_images(gt, count)
    if not images:
        return message_figure("No images to draw (empty split or evaluate.num_sample_images = 0).", target)
    dets: dict[int, list[Detection]] = defaultdict(list)
    for det in detections:
        if det["score"] >= score_threshold:
            dets[int(det["image_id"])].append(det)
    anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in gt["annotations"]:
        anns[int(ann["image_id"])].append(ann)

    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    aspect = max(float(im["height"]) / float(im["width"]) for im in images)  # cells fit the tallest image
    fig = new_figure(4 * cols, (4 * aspect + 0.3) * rows + 0.4)
    for n, image in enumerate(images):
        path = image_path(gt, image, workspace_root)
        try:
            with Image.open(path) as opened:
                picture = opened.convert("RGB")
        except OSError as exc:
            raise DataError(f"{path}: cannot read image {image['id']} for the prediction grid ({exc}). "
                            "Restore the raw dataset or re-run `detops import`.") from exc
        scale = min(1.0, MAX_SIDE / max(picture.size))
        if scale < 1:
            picture = picture.resize((round(picture.width * scale), round(picture.height * scale)))
        ax = fig.add_subplot(rows, cols, n + 1)
        ax.imshow(picture)
        ax.set_axis_off()
        ax.set_title(Path(str(image["file_name"])).name, fontsize="small")
        for ann in anns.get(int(image["id"]), []):
            x, y, w, h = (float(v) * scale for v in ann["bbox"])
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=TRUE_COLOUR, linewidth=1.5, linestyle="--"))
        for det in sorted(dets.get(int(image["id"]), []), key=lambda d: d["score"]):
            x, y, w, h = (float(v) * scale for v in det["bbox"])
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=PRED_COLOUR, linewidth=1.5))
            ax.text(x, y, f"{names[int(det['category_id'])]} {det['score']:.2f}", fontsize=6, color="white",
                    va="bottom", bbox={"facecolor": PRED_COLOUR, "edgecolor": "none", "pad": 1, "alpha": 0.8})
    fig.legend(
        handles=[Line2D([], [], color=TRUE_COLOUR, linestyle="--", label="ground truth"),
                 Line2D([], [], color=PRED_COLOUR, label=f"prediction (score >= {score_threshold:g})")],
        loc="outside lower center", ncols=2,
    )
    return save_png(fig, target)
