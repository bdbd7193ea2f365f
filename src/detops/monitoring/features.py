"""The feature table of a dataset: one row per readable image, the columns the drift tests compare.

Images are read in a thread pool (file reads, hashing and OpenCV all release the GIL), a chunk at a time so
embeddings can be computed batch by batch without holding every decoded image. Each image's features are cached
by its sha1, so only new images are decoded. An image that cannot be read is skipped and listed, not fatal: a
monitoring check should say what it could not read and go on with the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detops.cpus import thread_workers
from detops.dataset.canonical import Dataset, image_path
from detops.errors import DataError
from detops.monitoring.cache import FeatureCache
from detops.monitoring.embeddings import EMBEDDING_PREFIX, Embedder, embedding_columns
from detops.monitoring.labels import label_features
from detops.monitoring.pixels import PIXEL_COLUMNS, decode_bgr, pixel_features
from detops.progress import track
from detops.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

META_COLUMNS = ("file_name", "sha1")
MODEL_COLUMN = "embedding_model"  # the checkpoint sha1 the embedding columns come from
CHUNK = 64


@dataclass
class ImageFeatures:
    """One image's features, or why it could not be read."""

    sha1: str = ""
    pixels: dict[str, float] | None = None
    embedding: np.ndarray | None = None
    model_input: np.ndarray | None = None  # letterboxed RGB, while its embedding is still to compute
    error: str = ""


@dataclass
class FeatureTable:
    frame: pd.DataFrame
    skipped: list[str] = field(default_factory=list)  # "<file>: <why>" per image that could not be read
    labelled: bool = False


def image_features(
    paths: Sequence[Path],
    cache: FeatureCache,
    workers: int = 0,
    embedder: Embedder | None = None,
    description: str = "Image features",
) -> list[ImageFeatures]:
    """Features of every path, in order; cached entries are read, the rest computed in a thread pool."""
    with ThreadPoolExecutor(max_workers=thread_workers(workers)) as pool:
        return list(track(_chunks(paths, cache, pool, embedder), description, total=len(paths)))


def _chunks(
    paths: Sequence[Path], cache: FeatureCache, pool: ThreadPoolExecutor, embedder: Embedder | None
) -> Iterator[ImageFeatures]:
    for start in range(0, len(paths), CHUNK):
        chunk = list(pool.map(lambda p: _read(p, cache, embedder), paths[start : start + CHUNK]))
        pending = [f for f in chunk if f.model_input is not None]
        if embedder is not None and pending:
            vectors = embedder([f.model_input for f in pending if f.model_input is not None])
            for item, vector in zip(pending, vectors, strict=True):
                item.embedding, item.model_input = vector, None
                cache.put_embedding(item.sha1, embedder.version, vector)
        yield from chunk


def _read(path: Path, cache: FeatureCache, embedder: Embedder | None) -> ImageFeatures:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return ImageFeatures(error=f"{path}: cannot read the file ({exc.strerror or exc}).")
    sha1 = hashlib.sha1(data).hexdigest()
    out = ImageFeatures(sha1=sha1, pixels=cache.pixels(sha1))
    if embedder is not None:
        out.embedding = cache.embedding(sha1, embedder.version)
    if out.pixels is not None and (embedder is None or out.embedding is not None):
        return out
    try:
        image = decode_bgr(data, str(path))
    except DataError as exc:
        return ImageFeatures(sha1=sha1, error=str(exc))
    if out.pixels is None:
        out.pixels = pixel_features(image, len(data))
        cache.put_pixels(sha1, out.pixels)
    if embedder is not None and out.embedding is None:
        from detops.model.preprocess import letterbox

        out.model_input = letterbox(np.ascontiguousarray(image[:, :, ::-1]), embedder.image_size)[0]
    return out


def feature_cache(ws: Workspace) -> FeatureCache:
    return FeatureCache(ws.resolve(ws.params.monitor.cache))


def embedder_for(ws: Workspace) -> Embedder | None:
    """The embedding model when monitor.embeddings is on: monitor.embedding_checkpoint, else models/best.ckpt."""
    params = ws.params.monitor
    if not params.embeddings:
        return None
    checkpoint = ws.resolve(params.embedding_checkpoint) if params.embedding_checkpoint else ws.output("train", "best")
    if not checkpoint.is_file():
        raise DataError(f"monitor.embeddings is on but the checkpoint {checkpoint} is missing. Train a model, set "
                        "monitor.embedding_checkpoint, or set monitor.embeddings=false.")
    return Embedder(checkpoint)


def dataset_features(
    ws: Workspace, dataset: Dataset, embedder: Embedder | None = None, description: str = "Image features"
) -> FeatureTable:
    """The feature table of a canonical dataset (label columns when it has categories)."""
    import pandas as pd

    images = dataset["images"]
    paths = [image_path(dataset, im, ws.root) for im in images]
    computed = image_features(paths, feature_cache(ws), ws.params.monitor.workers, embedder, description)
    labelled = bool(dataset["categories"])
    labels = label_features(dataset) if labelled else {}
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for image, features in zip(images, computed, strict=True):
        if features.error or features.pixels is None:
            skipped.append(features.error)
            continue
        row: dict[str, Any] = {"file_name": image["file_name"], "sha1": features.sha1}
        row |= {name: features.pixels[name] for name in PIXEL_COLUMNS}
        row |= labels.get(int(image["id"]), {})
        if embedder is not None and features.embedding is not None:
            row[MODEL_COLUMN] = embedder.version
            row |= dict(zip(embedding_columns(len(features.embedding)), features.embedding.tolist(), strict=True))
        rows.append(row)
    return FeatureTable(pd.DataFrame(rows), skipped, labelled)


def feature_names(frame: pd.DataFrame) -> list[str]:
    """The columns drift tests compare one by one: every numeric column but the embedding's."""
    import pandas as pd

    return [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
            and c not in (*META_COLUMNS, MODEL_COLUMN) and not str(c).startswith(EMBEDDING_PREFIX)]


def embedding_names(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(EMBEDDING_PREFIX)]
