from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class MlflowParams(Section):
    """MLflow tracking. Empty `tracking_uri` means a SQLite store in the workspace,
    unless the MLFLOW_TRACKING_URI environment variable names a team's server."""

    tracking_uri: str = Field("", description="Tracking URI; empty = sqlite:///<workspace>/mlflow.db.")
    experiment: str = Field("detops", min_length=1, description="Experiment name.")
    registered_model: str = Field("detops-detector", min_length=1, description="Model registry name.")
