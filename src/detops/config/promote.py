from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from detops.config.base import Section

# MLflow's alias rules (mlflow.utils.validation): word characters and dashes; `latest` and `v<N>` are reserved.
_ALIAS_PATTERN = r"^[\w\-]+$"


class PromoteParams(Section):
    """MLflow registry promotion: the candidate replaces the champion only if it is better by min_improvement on
    the current test split and clears the min_metric floor. `lock` serialises concurrent promotions: `file` for a
    local store on one host, `prefect` (a global concurrency limit) for a shared tracking server."""

    metric: str = Field("test/map", min_length=1, description="Metric compared with the champion's.")
    min_improvement: float = Field(0.005, ge=0, description="Absolute gain needed to become champion.")
    min_metric: float = Field(
        0.0, ge=0, description="Absolute floor on the metric; with no comparable champion it alone decides."
    )
    alias: str = Field(
        "champion",
        min_length=1,
        max_length=200,
        pattern=_ALIAS_PATTERN,
        description="Registry alias of the serving model; the one it replaced gets previous-<alias>.",
    )
    lock: Literal["file", "prefect"] = Field(
        "file", description="Promotion lock: file (one host) or prefect (global concurrency limit, shared server)."
    )
    lock_timeout: float = Field(600.0, gt=0, description="Seconds to wait for the promotion lock before failing.")

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        """MLflow reserves `latest` and `v<N>` (version aliases); reject them here, not at the end of a run."""
        lowered = value.lower()
        if lowered == "latest" or (lowered.startswith("v") and lowered[1:].isdigit()):
            raise ValueError(f"{value!r} is reserved by MLflow (latest, v<N>); pick another alias")
        return value
