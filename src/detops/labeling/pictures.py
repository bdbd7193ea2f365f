"""Pictures of the labelling loop: thumbnails of the images chosen for labelling, and each audited image's labels
beside the model's predictions, as small JPEGs inlined in offline pages (no file beside the page to lose)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.evaluation.drawing import MAX_SIDE, PRED_COLOUR, TRUE_COLOUR
from detops.reporting.html import Raw, join, table, tag
from detops.reporting.style import CSS
from detops.workspace import Workspace

if TYPE_CHECKING:
    from PIL import Image

    from detops.dataset.canonical import Dataset
    from detops.inference.predictor import Detections
    from detops.labeling.audit import Audit

SHOWN_SCORE = 0.3  # predictions drawn from this score: the low-score boxes the audit reads would hide the picture


def _open(path: Path, side: int) -> tuple[Image.Image, float]:
    from PIL import Image

    from detops.model.preprocess import read_rgb

    picture = Image.fromarray(read_rgb(path))
    scale = min(1.0, side / max(picture.size))
    if scale < 1:
        picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    return picture, scale


def jpeg_uri(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(path: Path, side: int = 160) -> str:
    """The image shrunk to `side` pixels, as a data URI."""
    return jpeg_uri(_open(path, side)[0])


def label_beside_prediction(path: Path, labels: list[tuple[list[float], str]], det: Detections, names: list[str]
                            ) -> Image.Image:
    """Left: the labels (xywh, class); right: the predictions scoring >= SHOWN_SCORE (class and score)."""
    from PIL import Image, ImageDraw

    picture, scale = _open(path, MAX_SIDE // 2)
    sides = [picture.copy(), picture.copy()]
    pen = ImageDraw.Draw(sides[0])
    for (x, y, w, h), name in labels:
        box = [x * scale, y * scale, (x + w) * scale, (y + h) * scale]
        pen.rectangle(box, outline=TRUE_COLOUR, width=2)
        pen.text((box[0] + 2, box[1] + 1), name, fill=TRUE_COLOUR)
    pen = ImageDraw.Draw(sides[1])
    for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
        if score < SHOWN_SCORE:
            continue
        scaled = [float(v) * scale for v in box]
        pen.rectangle(scaled, outline=PRED_COLOUR, width=2)
        pen.text((scaled[0] + 2, scaled[1] + 1), f"{names[int(label)]} {score:.2f}", fill=PRED_COLOUR)
    canvas = Image.new("RGB", (picture.width * 2 + 8, picture.height), "white")
    canvas.paste(sides[0], (0, 0))
    canvas.paste(sides[1], (picture.width + 8, 0))
    return canvas


def audit_page(ws: Workspace, audit: Audit, dataset: Dataset, pictures: dict[int, tuple[dict[str, Any], Detections]],
               names: list[str]) -> str:
    """The audit as one offline page: a summary, then every image worst first, the first ones drawn."""
    from detops.dataset.canonical import category_names, image_path

    categories = category_names(dataset)
    boxes: dict[int, list[tuple[list[float], str]]] = {}
    for ann in dataset["annotations"]:
        boxes.setdefault(int(ann["image_id"]), []).append(
            ([float(v) for v in ann["bbox"]], categories[int(ann["category_id"])]))
    rows = []
    for image in audit.images:
        drawn: object = "–"
        if image.image_id in pictures:
            info, det = pictures[image.image_id]
            picture = label_beside_prediction(image_path(dataset, info, ws.root), boxes.get(image.image_id, []),
                                              det, names)
            drawn = Raw(f'<img src="{jpeg_uri(picture)}" alt="{html.escape(image.file_name, quote=True)}">')
        rows.append([image.rank, image.file_name, image.quality, image.issue, image.overlooked, image.swap,
                     image.badloc, drawn])
    summary = audit.to_dict()
    head = tag("p", f"{summary['images']} images audited with {audit.model}; {summary['flagged']} below label "
                    f"quality {audit.threshold:g} (overlooked {summary['issues']['overlooked']}, swap "
                    f"{summary['issues']['swap']}, bad location {summary['issues']['badloc']}). Left: the labels "
                    f"(green); right: the predictions scoring >= {SHOWN_SCORE:g} (red).")
    body = join([tag("h1", f"Label audit: {audit.source}"), head,
                 table(["rank", "image", "quality", "issue", "overlooked", "swap", "bad location",
                        "label | prediction"], rows, numeric=(0, 2, 4, 5, 6))])
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>label audit</title>"
            f"<style>{CSS}</style></head><body><main><section>{body}</section></main></body></html>\n")
