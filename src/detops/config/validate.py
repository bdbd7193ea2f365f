from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class ValidateParams(Section):
    """Data quality gate (Great Expectations) over the canonical dataset."""

    on_error: Literal["fail", "drop"] = Field(
        "fail", description="fail: stop the pipeline; drop: write a cleaned dataset without offending rows."
    )
    bbox_tolerance_px: float = Field(1.0, ge=0, description="How far a box may poke outside its image.")
    min_box_area: float = Field(1.0, ge=0, description="Smallest accepted box area in square pixels.")
    max_boxes_per_image: int = Field(500, ge=1, description="Most boxes one image may hold.")
    min_instances_per_class: int = Field(1, ge=0, description="Fewest boxes every class must have.")
    workers: int = Field(0, ge=0, le=64, description="Processes for the image integrity check; 0 = cores.")
    data_docs: bool = Field(True, description="Build Great Expectations Data Docs HTML under reports/.")
