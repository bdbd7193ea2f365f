"""`detops predict`: any model file on an image or a folder of images -> COCO results, optionally drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detops.atomic import write_json
from detops.errors import DataError
from detops.formats.source import IMAGE_SUFFIXES
from detops.inference.predictor import Detections, Predictor

PALETTE = ("#ff3838", "#2c99a8", "#ff9d97", "#48f90a", "#cfd231", "#1a9334", "#00d4bb", "#ff701f", "#344593",
           "#6473ff", "#0018ec", "#8438ff", "#520085", "#cb38ff", "#ff95c8", "#ff37c7")


@dataclass(frozen=True)
class FolderPrediction:
    images: int
    detections: int
    results: Path
    drawn: Path | None


def list_images(source: Path) -> tuple[Path, list[Path]]:
    """(root, images) for an image file or a folder searched recursively, in a stable order."""
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{source}: not an image ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        return source.parent, [source]
    if not source.is_dir():
        raise DataError(f"{source}: no such file or folder.")
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise DataError(f"{source}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return source, images


def predict_folder(predictor: Predictor, source: Path, out: Path, batch_size: int, draw: bool) -> FolderPrediction:
    """Predict every image under `source`; write `out/predictions.json` and, with `draw`, `out/images/`."""
    from detops.progress import track

    root, images = list_images(source)
    results: list[dict[str, Any]] = []
    drawn = out / "images" if draw else None
    batches = predictor.iter_batches(images, batch_size)
    for index, detections in enumerate(track(batches, "predict", total=-(-len(images) // batch_size))):
        for offset, det in enumerate(detections):
            image_id = index * batch_size + offset + 1
            path = images[image_id - 1]
            rel = path.relative_to(root).as_posix()
            names = predictor.meta.class_names
            results.extend({**r, "file_name": rel, "category_name": names[predictor.meta.class_ids.index(
                r["category_id"])]} for r in predictor.to_coco(det, image_id))
            if drawn is not None:
                draw_boxes(path, det, names, drawn / Path(rel).with_suffix(".jpg"))
    target = write_json(out / "predictions.json", results)
    return FolderPrediction(len(images), len(results), target, drawn)


def draw_boxes(image: Path, det: Detections, names: list[str], target: Path) -> None:
    """The image with each detection's box, class and score (colour per class)."""
    from PIL import Image, ImageDraw

    from detops.model.preprocess import read_rgb

    canvas = Image.fromarray(read_rgb(image))
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 300))
    for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
        colour = PALETTE[int(label) % len(PALETTE)]
        x0, y0, x1, y1 = (float(v) for v in box)
        pen.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        text = f"{names[int(label)]} {score:.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text)
        lift = bottom - top + 2
        pen.rectangle([x0, y0 - lift, x0 + right - left + 4, y0], fill=colour)
        pen.text((x0 + 2, y0 - lift), text, fill="white")
    target.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(target, quality=90)
