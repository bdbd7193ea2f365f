"""A predictor over a canonical dataset: COCO results for `coco_metrics`, as `evaluate` scores them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detops.dataset.canonical import Dataset, dataset_root
from detops.dataset.paths import resolve_inside
from detops.inference.predictor import Predictor


def dataset_images(dataset: Dataset, workspace_root: Path) -> list[tuple[int, Path]]:
    """(image id, file) of every image, each path checked to stay inside the dataset root."""
    root = dataset_root(dataset, workspace_root)
    return [(int(im["id"]), resolve_inside(root, str(im["file_name"]), f"image id {im['id']}"))
            for im in dataset["images"]]


def predict_dataset(predictor: Predictor, dataset: Dataset, workspace_root: Path, batch_size: int,
                    label: str = "predict") -> list[dict[str, Any]]:
    """COCO detection results for every image: image_id, original category_id, [x, y, w, h] in original
    pixels, score."""
    from detops.progress import track

    images = dataset_images(dataset, workspace_root)
    ids, paths = [i for i, _ in images], [p for _, p in images]
    results: list[dict[str, Any]] = []
    batches = predictor.iter_batches(paths, batch_size)
    for index, detections in enumerate(track(batches, label, total=-(-len(paths) // batch_size))):
        start = index * batch_size
        for image_id, det in zip(ids[start : start + batch_size], detections, strict=True):
            results.extend(predictor.to_coco(det, image_id))
    return results
