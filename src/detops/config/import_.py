from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class ImportParams(Section):
    """Dataset import into the canonical COCO json (`<paths.prepared>/dataset.json`)."""

    format: Literal["coco", "yolo", "voc"] = Field("coco", description="Source annotation format.")
    source: str = Field("data/raw/sample", description="Dataset root (relative to the workspace or absolute).")
    annotations: str = Field(
        "",
        description="COCO: the instances json (default: annotations.json or the only *.json in `source`). "
        "YOLO: data.yaml or classes.txt (default: data.yaml, the only *.yaml, or classes.txt in `source`). "
        "VOC: unused. A relative path is looked up in `source`, then in the workspace.",
    )
    size_mismatch: Literal["warn", "error"] = Field(
        "warn", description="What to do when an annotation's width/height disagree with the image file."
    )
    batches: str = Field(
        "data/raw/accepted",
        description="Folder of accepted data batches (one labelled sub-folder each, any format), read together "
        "with `source` into one dataset; retraining on drift adds batches here (DVC-tracked).",
    )
    workers: int = Field(0, ge=0, le=64, description="Threads reading image headers; 0 = one per core.")
