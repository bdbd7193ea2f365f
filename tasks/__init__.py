"""Prefect tasks: each wraps one `detops.steps.<verb>.run` and adds retries, caching and an artifact."""

from tasks.steps import run_step, step_task

__all__ = ["run_step", "step_task"]
