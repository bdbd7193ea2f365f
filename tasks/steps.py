"""One Prefect task per pipeline verb, built from the same `detops.steps.<verb>.run` the CLI calls.

A task adds only orchestration: retries where the work is I/O, a cache keyed on the stage's params and
deps as `dvc.yaml` lists them (a missing output forces a re-run), and a markdown artifact with the result.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import TaskRunContext

from detops.pipeline import fingerprint, load_stages, outputs_present
from detops.steps.result import StepResult
from detops.workspace import Workspace

# Step module per verb (`import` is a Python keyword) and how many retries its I/O deserves.
MODULES = {"import": "import_"}
RETRIES = {"sample": 1, "import": 2, "validate": 1, "split": 1, "train": 0, "evaluate": 1, "export": 0}


def _cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
    ws: Workspace = arguments["ws"]
    verb: str = arguments["verb"]
    stage = load_stages(ws).get(verb)
    return None if stage is None else f"detops-{verb}-{fingerprint(ws, stage)}"


def _run(ws: Workspace, verb: str, options: dict[str, Any]) -> StepResult:
    module = importlib.import_module(f"detops.steps.{MODULES.get(verb, verb)}")
    result: StepResult = module.run(ws, **options)
    create_markdown_artifact(
        key=f"detops-{verb}", markdown=result.to_markdown(), description=f"detops {verb} result"
    )
    return result


def step_task(verb: str) -> Any:
    """The Prefect task for `verb`, named after it so the UI shows the pipeline's own vocabulary."""
    return task(
        name=verb,
        task_run_name=verb,
        retries=RETRIES.get(verb, 0),
        retry_delay_seconds=5,
        cache_policy=CacheKeyFnPolicy(cache_key_fn=_cache_key),
        persist_result=True,
    )(_run)


def run_step(ws: Workspace, verb: str, **options: Any) -> StepResult:
    """Run `verb` as a task; a missing output refreshes the cache so a hit never skips lost files."""
    stage = load_stages(ws).get(verb)
    refresh = stage is None or not outputs_present(ws, stage) or bool(options)
    result: StepResult = step_task(verb).with_options(refresh_cache=refresh)(ws, verb, options)
    return result
