"""One predictor for every artifact: letterbox -> runtime -> numpy decode -> boxes in original pixels.

`evaluate`, the export accuracy gate, `detops predict` and the registry's re-scoring all call this, so a
checkpoint, an FP32/FP16/INT8 ONNX file and a TensorRT engine are scored the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

from detops.errors import DataError
from detops.inference.decode import Thresholds, decode
from detops.inference.meta import ModelMeta
from detops.inference.runtimes import Runtime
from detops.model.preprocess import Letterbox, boxes_to_original, letterbox, read_rgb

ImageInput = Union[str, Path, bytes, np.ndarray]  # noqa: UP007 - a runtime alias, Python 3.10 included
"""A path to an image file, its encoded bytes, or an HxWx3 uint8 RGB array."""


@dataclass(frozen=True)
class Detections:
    """One image's detections in its original pixels: xyxy boxes [K, 4], scores [K], contiguous labels [K]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def load_image(image: ImageInput) -> np.ndarray:
    """Any accepted input as an HxWx3 uint8 RGB array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"an image array must be HxWx3 uint8 RGB, got shape {image.shape} {image.dtype}")
        return image
    if isinstance(image, bytes):
        return _decode_bytes(image)
    return read_rgb(Path(image))


def _decode_bytes(data: bytes) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    from detops.model.preprocess import _to_rgb_uint8

    try:
        with Image.open(io.BytesIO(data)) as img:
            return _to_rgb_uint8(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"cannot decode image bytes ({exc}).") from None


def decoded_batches(images: Sequence[ImageInput], batch_size: int, skip_unreadable: bool = False
                    ) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    """(positions in `images`, decoded arrays), `batch_size` images at a time, the next batch decoded in a thread
    while the caller runs the model on this one. An unreadable image raises its DataError, or with
    `skip_unreadable` is left out of its batch (its position with it)."""
    starts = range(0, len(images), batch_size)
    if not starts:
        return
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_load_all, images, starts[0], batch_size, skip_unreadable)
        for index in range(len(starts)):
            decoded = pending.result()
            if index + 1 < len(starts):
                pending = pool.submit(_load_all, images, starts[index + 1], batch_size, skip_unreadable)
            yield [i for i, _ in decoded], [array for _, array in decoded]


def _load_all(images: Sequence[ImageInput], start: int, size: int, skip_unreadable: bool
              ) -> list[tuple[int, np.ndarray]]:
    out = []
    for i in range(start, min(start + size, len(images))):
        try:
            out.append((i, load_image(images[i])))
        except DataError:
            if not skip_unreadable:
                raise
    return out


@dataclass(frozen=True, eq=False)
class Predictor:
    """A model file (any format) plus its metadata and the thresholds it decodes with. Immutable: other
    thresholds make another predictor (`with_thresholds`) over the same loaded runtime."""

    path: Path
    kind: str  # torch | onnx | openvino | tensorrt
    runtime: Runtime
    meta: ModelMeta
    thresholds: Thresholds

    def with_thresholds(self, thresholds: Thresholds | None = None, *, score_threshold: float | None = None
                        ) -> Predictor:
        """The same model and runtime decoding with `thresholds` (default: the current ones), the score threshold
        replaced when `score_threshold` is given."""
        chosen = self.thresholds if thresholds is None else thresholds
        if score_threshold is not None:
            chosen = replace(chosen, score_threshold=float(score_threshold))
        return self if chosen == self.thresholds else replace(self, thresholds=chosen)

    @property
    def runtime_name(self) -> str:
        return str(self.runtime.name)

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """RGB arrays -> one float32 NCHW batch in [0, 1] and the geometry to undo each letterbox."""
        size = self.meta.image_size
        batch = np.empty((len(images), 3, size, size), dtype=np.float32)
        boxes = []
        for i, image in enumerate(images):
            square, lb = letterbox(image, size, self.meta.pad_value)
            batch[i] = square.transpose(2, 0, 1)
            boxes.append(lb)
        batch *= 1.0 / 255.0
        return batch, boxes

    def postprocess(self, raw: np.ndarray, letterboxes: Sequence[Letterbox]) -> list[Detections]:
        out = []
        for det, lb in zip(decode(raw, self.thresholds), letterboxes, strict=True):
            boxes = boxes_to_original(det.boxes, lb)
            alive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # collapsed by clipping: gone
            out.append(Detections(boxes[alive], det.scores[alive].astype(np.float64), det.labels[alive]))
        return out

    def predict_arrays(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections for decoded RGB images, in one runtime call."""
        if not images:
            return []
        batch, letterboxes = self.preprocess(images)
        return self.postprocess(self.runtime(batch), letterboxes)

    def predict(self, images: Sequence[ImageInput], batch_size: int = 8) -> list[Detections]:
        """Detections for paths, bytes or arrays, `batch_size` images per runtime call."""
        out: list[Detections] = []
        for chunk in self.iter_batches(images, batch_size):
            out.extend(chunk)
        return out

    def iter_batches(self, images: Sequence[ImageInput], batch_size: int) -> Iterator[list[Detections]]:
        """Batch after batch; the next batch's images are decoded in a thread while the model runs."""
        for _, arrays in decoded_batches(images, batch_size):
            yield self.predict_arrays(arrays)

    def to_coco(self, det: Detections, image_id: int) -> list[dict[str, Any]]:
        """COCO results: original category ids, [x, y, w, h] boxes."""
        results = []
        for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append({"image_id": int(image_id), "category_id": self.meta.class_ids[int(label)],
                            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                            "score": round(float(score), 5)})
        return results
