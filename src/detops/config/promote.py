from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class PromoteParams(Section):
    """MLflow registry promotion gated on an improvement over the champion (later release)."""

    metric: str = Field("test/map", description="Metric compared with the champion's.")
    min_improvement: float = Field(0.005, ge=0, description="Absolute gain needed to become champion.")
    alias: str = Field("champion", min_length=1, description="Registry alias of the serving model.")
