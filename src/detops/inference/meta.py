"""What a model file must carry to be run alone: classes, input geometry, thresholds, provenance.

ONNX files hold it as one json string in `metadata_props` (key `detops`); a TensorRT engine, which has no
room for it, gets a sidecar json next to it. A checkpoint holds the same facts in its hyperparameters.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from detops.errors import DataError
from detops.inference.decode import Thresholds

METADATA_KEY = "detops"
INPUT_NAME = "images"
OUTPUT_NAME = "raw"
INPUT_DOC = "float32 RGB in [0, 1], NCHW, letterboxed (longest side resized, centred padding)"
OUTPUT_DOC = "[B, N, 5 + C]: x1, y1, x2, y2 (input pixels), centerness logit, C class logits"


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to turn images into detections with one model file."""

    class_ids: list[int]  # contiguous label i -> the dataset's category id
    class_names: list[str]
    image_size: int
    pad_value: int
    evaluation: Thresholds  # what `evaluate` scores with (low score threshold: the whole PR curve)
    deploy_score_threshold: float | None  # what `detops predict` keeps by default; None = evaluation's
    precision: str = "fp32"
    backbone: str = ""
    detops_version: str = ""
    run_id: str | None = None  # the MLflow training run the weights come from
    extra: dict[str, Any] = field(default_factory=dict)

    def deployment(self) -> Thresholds:
        """Thresholds for serving: the deployment score threshold, the evaluation's NMS and top-k."""
        if self.deploy_score_threshold is None:
            return self.evaluation
        return replace(self.evaluation, score_threshold=self.deploy_score_threshold)

    def with_(self, **changes: Any) -> ModelMeta:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["evaluation"] = self.evaluation.to_dict()
        out["input"], out["output"] = INPUT_DOC, OUTPUT_DOC
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ModelMeta:
        try:
            return cls(
                class_ids=[int(i) for i in data["class_ids"]],
                class_names=[str(n) for n in data["class_names"]],
                image_size=int(data["image_size"]),
                pad_value=int(data["pad_value"]),
                evaluation=Thresholds(**data["evaluation"]),
                deploy_score_threshold=data.get("deploy_score_threshold"),
                precision=str(data.get("precision", "fp32")),
                backbone=str(data.get("backbone", "")),
                detops_version=str(data.get("detops_version", "")),
                run_id=data.get("run_id"),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: detops metadata is incomplete ({exc!r}); re-export the model.") from None

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelMeta:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: detops metadata is not valid json ({exc}).") from None
        return cls.from_dict(data, where)


def detops_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("detops")
    except metadata.PackageNotFoundError:
        return "unknown"
