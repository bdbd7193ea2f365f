"""A model a worker can answer with: the predictor, loaded and warmed, and what `/model` says about it.

Immutable, so a swap is one reference assignment: a batch that picked a model keeps it to the end, whatever
the follower switches to meanwhile.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detops.inference.predictor import Detections, Predictor


@dataclass(frozen=True)
class ModelInfo:
    """Which model this is, as `/model`, `/health` and every answer name it."""

    role: str  # champion | challenger
    name: str  # registered model, or the file's name
    version: str  # registry version, or `sha256:<12 hex>` of a file
    alias: str | None
    variant: str  # export variant (onnx-int8, tensorrt-fp16, ...) or the file's suffix
    run_id: str | None
    runtime: str
    classes: tuple[tuple[int, str], ...]
    thresholds: dict[str, float | int]
    image_size: int

    def answer(self) -> dict[str, Any]:
        """The `model` block of a prediction."""
        return {"name": self.name, "version": self.version, "alias": self.alias}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": [{"id": i, "name": n} for i, n in self.classes]}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    info: ModelInfo
    predictor: Predictor
    warm: threading.Event = field(default_factory=threading.Event)  # set once its largest batch size has run

    def predict(self, images: list[Any]) -> list[Detections]:
        """Until warm, one image at a time: a batch size met first would compile a model of its own (OpenVINO)."""
        if len(images) > 1 and not self.warm.is_set():
            return [answer for image in images for answer in self.predictor.predict_arrays([image])]
        return self.predictor.predict_arrays(images)


def load(path: Path, *, role: str, name: str, version: str, alias: str | None, variant: str, device: str,
         threads: int, score_threshold: float) -> LoadedModel:
    """`load_predictor` on the file, decoding with the serving score threshold (`predict.score_threshold`)."""
    from detops.inference.loading import load_predictor

    predictor = load_predictor(path, device=device, threads=threads).with_thresholds(score_threshold=score_threshold)
    meta = predictor.meta
    info = ModelInfo(role=role, name=name, version=version, alias=alias, variant=variant, run_id=meta.run_id,
                     runtime=predictor.runtime_name, classes=tuple(zip(meta.class_ids, meta.class_names, strict=True)),
                     thresholds=predictor.thresholds.to_dict(), image_size=meta.image_size)
    return LoadedModel(info, predictor)


def file_version(path: Path) -> str:
    """A file has no registry version: its content hash names it instead."""
    from detops.filehash import file_digest

    return f"sha256:{file_digest(path, 'sha256')[:12]}"


def warm_up(model: LoadedModel, example: bytes | None, sizes: tuple[int, ...],
            stop: threading.Event | None = None) -> None:
    """Run the model twice on each batch size of `sizes`, so requests pay no first-run allocation or compile and
    OpenVINO has measured each size (a server warms 1, then `serve.max_batch_size` and marks the model warm: the
    sizes between run on those two, see `OpenVinoRuntime`); any error (or an answer of the wrong shape) raises.
    A set `stop` ends it early (the server is shutting down)."""
    import numpy as np

    from detops.inference.predictor import load_image

    side = model.info.image_size
    image = load_image(example) if example else np.full((side, side, 3), 114, dtype=np.uint8)  # grey, as letterboxed
    for size in (size for size in sizes for _ in range(2)):
        if stop is not None and stop.is_set():
            return
        answers = model.predictor.predict_arrays([image] * size)
        if len(answers) != size:
            raise RuntimeError(f"warm-up on {size} image(s) returned {len(answers)} answers")
