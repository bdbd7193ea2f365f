"""The label audit: the champion's out-of-sample predictions (low-score boxes kept) against the labels, through
cleanlab's object-detection scores (`detops.labeling.quality`).

Run on the val and test splits (the champion never trained there) by `detops label audit --split`, and on every
labelled batch before it joins the dataset (`detops.monitoring.accept`). The report ranks images from the worst
label quality up, names each flagged image's likely issue and draws its labels beside the predictions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detops.atomic import write_json, write_text
from detops.dataset.canonical import Dataset
from detops.dataset.classes import check_classes
from detops.errors import DataError
from detops.inference.predictor import Detections, Predictor
from detops.labeling.quality import NO_ISSUE, LabelBoxes, label_quality, per_class
from detops.workspace import Workspace


@dataclass(frozen=True)
class ImageAudit:
    file_name: str
    image_id: int
    rank: int  # 1 = worst label quality
    quality: float
    issue: str  # overlooked | swap | badloc | none
    overlooked: float
    swap: float
    badloc: float
    flagged: bool


@dataclass(frozen=True)
class Audit:
    source: str
    model: str
    threshold: float
    images: list[ImageAudit]  # worst first

    @property
    def flagged(self) -> list[ImageAudit]:
        return [image for image in self.images if image.flagged]

    def to_dict(self) -> dict[str, Any]:
        issues = {kind: sum(1 for i in self.flagged if i.issue == kind) for kind in ("overlooked", "swap", "badloc")}
        return {"source": self.source, "model": self.model, "review_threshold": self.threshold,
                "images": len(self.images), "flagged": len(self.flagged), "issues": issues,
                "ranking": [asdict(image) for image in self.images]}


def class_indices(dataset: Dataset, class_names: list[str], what: str) -> dict[int, int]:
    """Dataset category id -> the model's class index, by name; ClassSetMismatch naming the classes the model
    lacks."""
    names = {int(c["id"]): str(c["name"]) for c in dataset["categories"]}
    check_classes(names.values(), class_names, who=what, ref="the labelling model",
                  fix="Relabel with the model's class names, or audit with a model trained on these classes "
                      "(label.model); nothing was audited or accepted.")
    return {cid: class_names.index(name) for cid, name in names.items() if name in class_names}


def label_boxes(dataset: Dataset, index: dict[int, int]) -> list[LabelBoxes]:
    """Each image's labels (dataset order) as xyxy boxes and model class indices."""
    by_image: dict[int, list[list[float]]] = {int(im["id"]): [] for im in dataset["images"]}
    for ann in dataset["annotations"]:
        x, y, w, h = (float(v) for v in ann["bbox"])
        by_image[int(ann["image_id"])].append([x, y, x + w, y + h, index[int(ann["category_id"])]])
    out = []
    for image in dataset["images"]:
        rows = np.asarray(by_image[int(image["id"])], dtype=np.float64).reshape(-1, 5)
        out.append(LabelBoxes(rows[:, :4], rows[:, 4].astype(np.int64)))
    return out


def audit_dataset(ws: Workspace, dataset: Dataset, predictor: Predictor, source: str, model: str
                  ) -> tuple[Audit, list[Detections]]:
    """Every image's label quality under `predictor` (decoding down to label.min_score), worst first."""
    from detops.inference.dataset import image_detections

    params = ws.params.label
    index = class_indices(dataset, predictor.meta.class_names, source)
    labels = label_boxes(dataset, index)
    predictor = predictor.with_thresholds(score_threshold=params.min_score)
    detections = [det for _, det in image_detections(predictor, dataset, ws.root, ws.params.predict.batch_size,
                                                     f"Audit of {source}")]
    classes = len(predictor.meta.class_names)
    predictions = [per_class(d.boxes, d.scores, d.labels, classes) for d in detections]
    quality = label_quality(labels, predictions, params.confident_score, params.plausible_score)
    order = np.argsort(quality.scores, kind="stable")
    images = []
    for rank, i in enumerate(order, start=1):
        image = dataset["images"][i]
        issue = quality.issue(int(i), params.review_threshold)
        sub = {k: round(float(v[i]), 5) for k, v in quality.issue_scores.items()}
        images.append(ImageAudit(str(image["file_name"]), int(image["id"]), rank, round(float(quality.scores[i]), 5),
                                 issue, sub["overlooked"], sub["swap"], sub["badloc"], issue != NO_ISSUE))
    return Audit(source, model, params.review_threshold, images), detections


def write_audit(ws: Workspace, audit: Audit, dataset: Dataset, detections: list[Detections], names: list[str],
                json_file: Path, html_file: Path) -> None:
    """The audit as json (every image) and as an offline page (the worst images drawn)."""
    write_json(json_file, audit.to_dict())
    position = {int(im["id"]): n for n, im in enumerate(dataset["images"])}
    drawn = audit.images[: ws.params.label.pictures]
    pictures = {i.image_id: (dataset["images"][position[i.image_id]], detections[position[i.image_id]])
                for i in drawn}
    write_text(html_file, audit_page(ws, audit, dataset, pictures, names))


def audit_page(ws: Workspace, audit: Audit, dataset: Dataset, pictures: dict[int, tuple[dict[str, Any], Detections]],
               names: list[str]) -> str:
    """The audit as one offline page: a summary, then every image worst first, the first ones drawn."""
    import html

    from detops.dataset.canonical import category_names, image_path
    from detops.labeling.pictures import SHOWN_SCORE, jpeg_uri, label_beside_prediction
    from detops.reporting.html import Raw, join, table, tag
    from detops.reporting.style import CSS

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


def audit_files(ws: Workspace, batch: str | None) -> tuple[Path, Path]:
    """Where an audit goes: the split audit's reports/label_audit.{json,html}, a batch's own folder."""
    if batch is None:
        return ws.output("monitor", "label_audit"), ws.output("monitor", "label_audit_page")
    folder = ws.output("monitor", "batch_audits") / batch
    return folder / "label_audit.json", folder / "label_audit.html"


def run_audit(ws: Workspace, dataset: Dataset, source: str, batch: str | None = None) -> Audit:
    """Audit `dataset` with the labelling model and write its report; returns the audit."""
    from detops.inference.loading import load_predictor
    from detops.labeling.model import labelling_model

    with labelling_model(ws) as model:
        predictor = load_predictor(model.path)
        audit, detections = audit_dataset(ws, dataset, predictor, source, model.description)
    write_audit(ws, audit, dataset, detections, predictor.meta.class_names, *audit_files(ws, batch))
    return audit


@dataclass(frozen=True)
class ReviewImage:
    file_name: str
    quality: float
    issue: str


def review_folder(ws: Workspace) -> Path:
    """The review lists, one `<batch>.json` per accepted batch whose flagged images were left out."""
    return ws.output("monitor", "review")


def review_file(ws: Workspace, batch: str) -> Path:
    return review_folder(ws) / f"{batch}.json"


def write_review_list(ws: Workspace, batch: str, audit: Audit) -> Path:
    return write_json(review_file(ws, batch), {"batch": batch, "model": audit.model, "images": [
        {"file_name": i.file_name, "quality": i.quality, "issue": i.issue} for i in audit.flagged]})


def read_review_list(ws: Workspace, batch: str) -> list[ReviewImage]:
    """The images of `batch` the audit sent back for review (worst first); empty when none were."""
    import json

    path = review_file(ws, batch)
    if not path.is_file():
        return []
    try:
        return [ReviewImage(str(i["file_name"]), float(i["quality"]), str(i["issue"]))
                for i in json.loads(path.read_text(encoding="utf-8"))["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable review list ({exc}). Run the audit again (`detops label audit "
                        f"--split {batch}`).") from None


def audit_target(ws: Workspace, split: str) -> tuple[Dataset, str, str | None]:
    """(dataset, what it is, batch name or None) for `--split`: `val`, `test` or a labelled batch."""
    from detops.dataset.canonical import read_dataset

    if split in ("val", "test"):
        path = ws.split_json(split)
        if not path.is_file():
            raise DataError(f"{path}: the {split} split is missing; run `detops split`.")
        return read_dataset(path), f"{split} split", None
    if split == "train":
        raise DataError("the champion trained on the train split: its predictions there are not out-of-sample. "
                        "Audit val, test or a batch.")
    from detops.monitoring.batches import find_batch, read_batch

    data = read_batch(ws, find_batch(ws, split))
    if data.format == "images":
        raise DataError(f"batch {split!r} has no labels to audit (images only): label it first.")
    return data.dataset, f"batch {split}", split
