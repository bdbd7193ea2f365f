from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class PathsParams(Section):
    """Workspace layout, relative to the workspace root."""

    raw: str = Field("data/raw", description="Input datasets, never modified (DVC-tracked).")
    prepared: str = Field("data/prepared", description="Canonical COCO json, cleaned data and split files.")
    models: str = Field("models", description="Checkpoints, ONNX files and TensorRT engines.")
    reports: str = Field("reports", description="Metrics, plots, validation and drift reports.")
    resume_store: str = Field(
        "", description="Where training also keeps its resume checkpoint as it goes, for a run whose disk does not "
        "outlive it (a pod): an fsspec URL prefix (s3://bucket/detops/resume, gs://..., file:///...). A run that "
        "finds no local checkpoint of its key downloads it from there and resumes. Empty = the workspace only."
    )
