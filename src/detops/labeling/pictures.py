"""Pictures of the labelling loop: thumbnails of the images chosen for labelling, and each audited image's labels
beside the model's predictions, as small JPEGs inlined in offline pages (no file beside the page to lose)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

from detops.evaluation.drawing import MAX_SIDE, PRED_COLOUR, TRUE_COLOUR

if TYPE_CHECKING:
    from PIL import Image

    from detops.inference.predictor import Detections

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
