"""The one loop of a predictor over a canonical dataset: evaluate's scorer (COCO results), the label audit and
selection (each image's detections) and the monitor's prediction columns all run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detops.dataset.canonical import Dataset, dataset_root
from detops.dataset.paths import resolve_inside
from detops.inference.predictor import Detections, Predictor, decoded_batches


def dataset_images(dataset: Dataset, workspace_root: Path) -> list[tuple[int, Path]]:
    """(image id, file) of every image, each path checked to stay inside the dataset root."""
    root = dataset_root(dataset, workspace_root)
    return [(int(im["id"]), resolve_inside(root, str(im["file_name"]), f"image id {im['id']}"))
            for im in dataset["images"]]


def image_detections(predictor: Predictor, dataset: Dataset, workspace_root: Path, batch_size: int,
                     label: str = "predict", skip_unreadable: bool = False) -> list[tuple[dict[str, Any], Detections]]:
    """(image entry, its detections) for every image of `dataset`, in its order, `batch_size` images per model
    call (`label`: the progress bar's). An unreadable image raises its DataError, or with `skip_unreadable` has no
    entry."""
    from detops.progress import track

    images = dataset["images"]
    paths = [path for _, path in dataset_images(dataset, workspace_root)]
    out: list[tuple[dict[str, Any], Detections]] = []
    batches = decoded_batches(paths, batch_size, skip_unreadable)
    for positions, arrays in track(batches, label, total=-(-len(paths) // batch_size)):
        out.extend(zip([images[i] for i in positions], predictor.predict_arrays(arrays), strict=True))
    return out


def predict_dataset(predictor: Predictor, dataset: Dataset, workspace_root: Path, batch_size: int,
                    label: str = "predict") -> list[dict[str, Any]]:
    """COCO detection results for every image: image_id, original category_id, [x, y, w, h] in original
    pixels, score."""
    return [result for image, det in image_detections(predictor, dataset, workspace_root, batch_size, label)
            for result in predictor.to_coco(det, int(image["id"]))]
