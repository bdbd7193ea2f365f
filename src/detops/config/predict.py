from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class PredictParams(Section):
    """Serving defaults (`detops predict`, the MLflow model), embedded in every exported file."""

    score_threshold: float = Field(0.3, ge=0, lt=1, description="Lowest score a served detection keeps.")
    batch_size: int = Field(8, ge=1, le=1024, description="Images per inference batch.")
