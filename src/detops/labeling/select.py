"""What to label next: rank an unlabelled batch's images by how much a label would teach the champion.

Method: uncertainty-weighted k-center greedy (core-set, Sener & Savarese 2018, with each candidate's distance
weighted by its uncertainty). Uncertainty is the sum of the binary entropies of the champion's detection scores in
the image from `label.uncertain_score` up (the `sum` aggregation of Brust et al. 2019), scaled by the batch's
largest: a box at 0.5 is one decision the model cannot make, so an image holding many is worth more. The `max`
aggregation was tried first and saturates with low-score boxes kept: on the sample, half of 200 images had a box
within 0.05 of 0.5, so it barely told them apart. The sum saturates too when it counts every box down to
`label.min_score`: NMS keeps about 100 per image, mostly background, and their entropy says how many there are.
Diversity is the k-center distance on the embeddings the drift check already computes (the champion's pooled
backbone features, cosine geometry): the next pick maximises `(floor + uncertainty) x distance to
the nearest image already picked`. Uncertainty alone picks near-duplicates of one hard scene (a burst of captured
frames); k-center alone spends the budget on easy outliers; the product covers the batch while preferring what
confuses the model. An image with no detection keeps a small floor, so it can still be picked for coverage.

Outputs go to the batch's folder under the monitor step's `selections` output (the landing batch is never
touched): `selection.json` (every image ranked, with its scores) and the thumbnails the run page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detops.atomic import atomic_dir, write_json
from detops.errors import DataError
from detops.workspace import Workspace

UNCERTAINTY_FLOOR = 0.05  # on the [0, 1] scale of the batch's uncertainties
SELECTION = "selection.json"


@dataclass(frozen=True)
class SelectedImage:
    file_name: str  # relative to the batch folder
    score: float  # the uncertainty-weighted distance it was picked with
    rank: int  # 1 = label first


def image_uncertainty(scores: np.ndarray, floor: float = 0.0) -> float:
    """Sum of the binary entropies (bits) of the detection scores from `floor` up: 1 per box at exactly 0.5; 0 with
    no box."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.clip(s[s >= floor], 1e-6, 1 - 1e-6)
    return float(-(s * np.log2(s) + (1 - s) * np.log2(1 - s)).sum())


def rank_for_labelling(uncertainty: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, gain at pick, distance at pick) of every image: uncertainty-weighted k-center greedy (uncertainty
    scaled to [0, 1] by its largest value)."""
    n = len(uncertainty)
    uncertainty = np.asarray(uncertainty, dtype=np.float64)
    uncertainty = uncertainty / max(float(uncertainty.max(initial=0.0)), 1e-12)
    vectors = np.asarray(embeddings, dtype=np.float64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    weight = UNCERTAINTY_FLOOR + uncertainty
    distance = np.ones(n)  # to the nearest picked image, halved chord length in [0, 1]; 1 before any pick
    picked = np.zeros(n, dtype=bool)
    order, gains, distances = [], [], []
    for _ in range(n):
        gain = np.where(picked, -np.inf, weight * distance)
        best = int(np.argmax(gain))
        order.append(best)
        gains.append(float(gain[best]))
        distances.append(float(distance[best]))
        picked[best] = True
        distance = np.minimum(distance, np.linalg.norm(vectors - vectors[best], axis=1) / 2)
    return np.asarray(order, dtype=np.int64), np.asarray(gains), np.asarray(distances)


@dataclass(frozen=True)
class Selection:
    file: Path
    selected: list[SelectedImage]
    images: int
    notes: list[str]


def selection_folder(ws: Workspace, batch: str) -> Path:
    return ws.output("monitor", "selections") / batch


def select_batch(ws: Workspace, name: str, budget: int | None = None) -> Selection:
    """Rank batch `name` for labelling with the labelling model; write its selection folder."""
    from detops.dataset.canonical import image_path
    from detops.inference.dataset import image_detections
    from detops.inference.loading import CHECKPOINT_SUFFIXES, load_predictor
    from detops.labeling.model import labelling_model
    from detops.labeling.pictures import thumbnail
    from detops.monitoring.batches import find_batch, read_batch
    from detops.monitoring.embeddings import Embedder
    from detops.monitoring.features import feature_cache, image_features

    params = ws.params.label
    budget = params.budget if budget is None else budget
    data = read_batch(ws, find_batch(ws, name))
    if not data.dataset["images"]:
        raise DataError(f"batch {name!r}: no readable images in {data.batch.path}; nothing to select.")
    notes = [f"{len(data.skipped)} unreadable image(s) left out"] if data.skipped else []
    with labelling_model(ws) as model:
        checkpoint = model.path
        if checkpoint.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise DataError(f"label.model {checkpoint}: selection needs a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})"
                            ": its backbone gives the embeddings the diversity term uses.")
        predictor = load_predictor(checkpoint).with_thresholds(score_threshold=params.min_score)
        embedder = Embedder(checkpoint)
        paths = [image_path(data.dataset, im, ws.root) for im in data.dataset["images"]]
        features = image_features(paths, feature_cache(ws), ws.params.monitor.workers, embedder,
                                  f"Embeddings of {name}")
        detections = [det for _, det in image_detections(predictor, data.dataset, ws.root,
                                                         ws.params.predict.batch_size, f"Detections of {name}")]
    uncertainty = np.asarray([image_uncertainty(d.scores, params.uncertain_score) for d in detections])
    failed = [f.error for f in features if f.embedding is None]
    if failed:
        raise DataError(f"batch {name!r}: {len(failed)} image(s) could not be embedded: {failed[0]}")
    embeddings = np.stack([f.embedding for f in features if f.embedding is not None])
    order, gains, distances = rank_for_labelling(uncertainty, embeddings)
    ranking: list[dict[str, Any]] = []
    for rank, (i, gain, distance) in enumerate(zip(order, gains, distances, strict=True), start=1):
        image = data.dataset["images"][int(i)]
        ranking.append({"rank": rank, "file_name": str(image["file_name"]), "score": round(gain, 6),
                        "uncertainty": round(float(uncertainty[i]), 6), "distance": round(distance, 6),
                        "detections": int((detections[i].scores >= ws.params.predict.score_threshold).sum()),
                        "selected": rank <= budget})
    folder = selection_folder(ws, name)
    with atomic_dir(folder) as tmp:
        for entry in ranking[: params.thumbnails]:
            entry["thumbnail"] = thumbnail(data.batch.path / entry["file_name"])
        write_json(tmp / SELECTION, {
            "batch": name, "model": model.description, "budget": budget, "images": len(ranking),
            "method": "uncertainty-weighted k-center greedy (summed entropy of detections >= label.uncertain_score"
                      " x embedding distance)",
            "ranking": ranking, "notes": notes})
    chosen = [SelectedImage(e["file_name"], e["score"], e["rank"]) for e in ranking if e["selected"]]
    return Selection(folder / SELECTION, chosen, len(ranking), notes)


def read_selection(ws: Workspace, batch: str) -> list[SelectedImage]:
    """The images `detops label select` chose from `batch` (within its budget), best first. DataError when the
    batch has no selection yet."""
    import json

    path = selection_folder(ws, batch) / SELECTION
    if not path.is_file():
        raise DataError(f"batch {batch!r} has no selection ({path} is missing): run `detops label select {batch}`.")
    try:
        ranking = json.loads(path.read_text(encoding="utf-8"))["ranking"]
        return [SelectedImage(str(e["file_name"]), float(e["score"]), int(e["rank"])) for e in ranking
                if e["selected"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable selection ({exc}); run `detops label select {batch}` again.") from None
