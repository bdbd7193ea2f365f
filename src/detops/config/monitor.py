from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class MonitorParams(Section):
    """Evidently drift report between the training data and new data (later release)."""

    current: str = Field("", description="Canonical COCO json of the new data; empty = the test split.")
    drift_share: float = Field(0.5, gt=0, le=1, description="Share of drifted features that flags drift.")
