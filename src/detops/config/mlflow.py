from __future__ import annotations

from pydantic import Field, field_validator

from detops.config.base import Section
from detops.registry.names import model_name_problem


class MlflowParams(Section):
    """MLflow tracking. Empty `tracking_uri` means a SQLite store in the workspace,
    unless the MLFLOW_TRACKING_URI environment variable names a team's server.
    Requests to a server are bounded (MLflow's own defaults wait minutes on a server that is down)."""

    tracking_uri: str = Field("", description="Tracking URI; empty = sqlite:///<workspace>/mlflow.db.")
    experiment: str = Field("detops", min_length=1, description="Experiment name.")
    registered_model: str = Field("detops-detector", min_length=1, description="Model registry name.")
    http_timeout: int = Field(
        10, ge=1, description="Seconds per request to a tracking server (MLFLOW_HTTP_REQUEST_TIMEOUT)."
    )
    http_max_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed server request (MLFLOW_HTTP_REQUEST_MAX_RETRIES)."
    )

    @field_validator("registered_model")
    @classmethod
    def _valid_model_name(cls, value: str) -> str:
        """MLflow's naming rules, checked when params load rather than after a training run."""
        problem = model_name_problem(value)
        if problem:
            raise ValueError(f"invalid registered model name: {problem}")
        return value
