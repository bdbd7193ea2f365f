from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class LabelParams(Section):
    """What to label next (`detops label select`) and the model-assisted label audit (`detops label audit`) that a
    labelled batch passes before it joins the dataset."""

    budget: int = Field(50, ge=1, description="Images `detops label select` picks from an unlabelled batch.")
    audit: Literal["warn", "review"] = Field("warn", description=(
        "warn: report label issues and accept the batch; review: flagged images go back to the Label Studio "
        "project for review, the rest of the batch is accepted."))
