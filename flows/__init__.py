"""Prefect flows that compose the detops tasks: `retrain` is the main one."""

import detops  # noqa: F401 - first: switches telemetry off before Prefect and MLflow are imported
