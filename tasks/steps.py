"""One Prefect task per pipeline verb, built from the same `detops.steps.<verb>.run` the CLI calls.

A task adds only orchestration:
- a cache keyed on what the step graph declares (params sections, deps content, code), served only when
  the outputs on disk are the ones that run left (a lost or edited output re-runs the step);
- with `restore`, a step not current here is first looked up in DVC's run cache on the remote (`tasks.dvc_sync`):
  a match is checked out instead of run, and the task ends in the state `Restored`;
- `promote` is never served from cache: it has side effects in the registry (and is idempotent per run);
- retries with exponential back-off, only for transient errors (network, server), never for a user error;
- a markdown artifact with the result, linking to the MLflow run.
"""

from __future__ import annotations

import importlib
from typing import Any

from prefect import Task, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import Completed, State
from prefect.tasks import exponential_backoff

from detops.errors import DetopsError
from detops.pipeline import fingerprint, is_current, record_run
from detops.steplog import step_log
from detops.steps.graph import STEPS
from detops.steps.result import StepResult
from detops.workspace import Workspace

RETRIES = {"import": 2, "evaluate": 2, "export": 1, "promote": 3}  # steps that talk to disks or servers


def _cache_key(context: TaskRunContext, arguments: dict[str, Any]) -> str:
    """The step's fingerprint, computed once by `run_step` (hashing the deps is the costly part)."""
    return f"detops-{arguments['verb']}-{arguments['key']}"


def is_transient(exc: BaseException) -> bool:
    """Worth another try: a network or server hiccup. Never a DetopsError (bad data, params, files)."""
    if isinstance(exc, DetopsError):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    try:
        from mlflow.exceptions import MlflowException, RestException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return False
    return isinstance(exc, RestException) or (
        isinstance(exc, MlflowException) and "connect" in str(exc).lower())


def _retry_transient(task_: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    try:
        state.result()
    except BaseException as exc:  # the state's own exception, re-raised by result()
        return is_transient(exc)
    return False


def _run(ws: Workspace, verb: str, options: dict[str, Any], key: str, restore: bool = False) -> Any:
    if restore:
        from tasks.dvc_sync import restore_stage

        if restore_stage(ws, verb):
            record_run(ws, STEPS[verb], key)
            result = restored(ws, verb)
            create_markdown_artifact(key=f"detops-{verb}", markdown=result.to_markdown() + _mlflow_link(ws),
                                     description=f"detops {verb} result (restored)")
            return Completed(data=result, name="Restored", message=result.notes[0])
    with step_log(ws, verb):  # library prints: reports/logs/<verb>.log, as `detops <verb>` does
        if verb == "train" and ws.params.train.num_nodes > 1:  # this pod is node 0; a Job runs the others
            from tasks.train_job import train_on_nodes

            result = train_on_nodes(ws, bool(options.get("resume")), flow_run_id=_flow_run_id())
        elif verb == "train" and _several_devices(ws):
            result = train_in_subprocess(ws, bool(options.get("resume")))
        else:
            module = importlib.import_module(STEPS[verb].module)
            result = module.run(ws, **options)
    if STEPS[verb].cacheable:
        record_run(ws, STEPS[verb], key)
    create_markdown_artifact(key=f"detops-{verb}", markdown=result.to_markdown() + _mlflow_link(ws),
                             description=f"detops {verb} result")
    return result


def restored(ws: Workspace, verb: str) -> StepResult:
    """What a step restored from the run cache reports: its outputs, and the scalars of its metric files."""
    import json

    metrics: dict[str, Any] = {}
    for out in STEPS[verb].outs:
        path = ws.output(verb, out.name)
        if out.kind == "metric" and path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            metrics |= {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool))}
    return StepResult(verb, {out.name: ws.relative(ws.output(verb, out.name)) for out in STEPS[verb].outs}, metrics,
                      ["restored from the DVC remote's run cache: it ran before with these params, data and code"])


def _several_devices(ws: Workspace) -> bool:
    from detops.training.trainer import starts_processes

    return starts_processes(ws.params.train)


def train_in_subprocess(ws: Workspace, resume: bool) -> StepResult:
    """Multi-device training through `detops train` in a child process: Lightning's DDP launcher starts each extra
    rank by re-running the current program, which must be the train command, not this flow. The child gets the
    run's effective params and shares the workspace lock this run holds."""
    import json
    import os
    import subprocess
    import sys

    from detops.errors import TrainingError
    from detops.locking import HELD_BY
    from detops.training.nodes import write_run_params

    params_file = write_run_params(ws)
    command = [sys.executable, "-m", "detops", "--workspace", str(ws.root), "--params", str(params_file), "train",
               *(["--resume"] if resume else [])]
    done = subprocess.run(command, env={**os.environ, HELD_BY: str(ws.root)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise TrainingError(f"`{' '.join(command[2:])}` failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    files = ws.outputs("train")
    metrics = json.loads(files["metrics"].read_text(encoding="utf-8"))
    return StepResult("train", {k: ws.relative(p) for k, p in files.items()}, metrics,
                      [f"trained on several devices ({ws.params.train.devices}, strategy {ws.params.train.strategy})"
                       " through `detops train` in a child process"])


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.get_id() or "") or None


def _mlflow_link(ws: Workspace) -> str:
    from detops.tracking import read_run_id, run_url

    run_id = read_run_id(ws)
    return f"\n\nMLflow run (plots, metrics, artifacts): {run_url(ws, run_id)}" if run_id else ""


def step_task(verb: str) -> Any:
    """The Prefect task for `verb`, named after it so the UI shows the pipeline's own vocabulary."""
    retries = RETRIES.get(verb, 0)
    return task(
        name=verb,
        task_run_name=verb,
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=2) if retries else 0,
        retry_condition_fn=_retry_transient,
        cache_policy=CacheKeyFnPolicy(cache_key_fn=_cache_key) if STEPS[verb].cacheable else NO_CACHE,
        persist_result=True,
    )(_run)


def run_step(ws: Workspace, verb: str, restore: bool = False, **options: Any) -> StepResult:
    """Run `verb` as a task; the cache serves only a step whose recorded outputs are still on disk. `restore`: a
    step not current here is restored from DVC's run cache when it holds this step's inputs."""
    step = STEPS[verb]
    key = fingerprint(ws, step) if step.cacheable else ""
    refresh = bool(options) or (step.cacheable and not is_current(ws, step, key))
    restore = restore and refresh and step.cacheable and not options
    result = step_task(verb).with_options(refresh_cache=refresh)(ws, verb, options, key, restore)
    return result.result() if isinstance(result, State) else result
