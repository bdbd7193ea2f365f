from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class PathsParams(Section):
    """Workspace layout, relative to the workspace root."""

    raw: str = Field("data/raw", description="Input datasets, never modified (DVC-tracked).")
    prepared: str = Field("data/prepared", description="Canonical COCO json, cleaned data and split files.")
    models: str = Field("models", description="Checkpoints, ONNX files and TensorRT engines.")
    reports: str = Field("reports", description="Metrics, plots, validation and drift reports.")
