"""Prefect tasks: each wraps one `detops.steps.<verb>.run` and adds retries, caching and an artifact."""

import detops  # noqa: F401 - first: switches telemetry off before Prefect and MLflow are imported
from tasks.steps import run_step, step_task

__all__ = ["run_step", "step_task"]
