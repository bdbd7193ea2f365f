"""The retraining flow: (sample, when training on the embedded sample) -> import -> validate -> split ->
train -> evaluate -> export -> promote, in the order the step graph declares. Runs without a server
(Prefect's temporary local API) unless PREFECT_API_URL is set.

- A failed quality gate (data validation, the FP32 export check) fails the run with its reason; nothing is
  registered. A promotion the gate rejects completes the run, with the reason.
- UI runs overlay the form's fields on the workspace's params.yaml; unset fields keep params.yaml's values.
- On the workspace's own params.yaml, each step is committed to `dvc.lock` and the data pushed at the end.

`python -m flows.retrain` is what `make demo` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import deployment, flow_run

from detops.config import load_params, validate_params
from detops.config.overlay import ParamsOverlay, changes_of, overlay
from detops.locking import workspace_lock
from detops.monitoring.accept import BatchOutcome, take_batch
from detops.monitoring.loopstate import loop_state
from detops.reporting.page import build_run_page
from detops.steps.graph import RETRAIN
from detops.steps.result import StepResult
from detops.tracking import git_state_at_start
from detops.workspace import Workspace
from flows.events import emit_accuracy_event, emit_promotion_event
from tasks import run_step
from tasks.dvc_sync import (
    add,
    commit_stage,
    dvc_repo,
    params_are_the_file,
    pull_run_cache,
    push,
    push_lock_branch,
    remote,
    sync_code_fingerprints,
)


def workspace_for(workspace: str, params: ParamsOverlay | dict[str, Any] | None, overrides: list[str]) -> Workspace:
    """The workspace's params.yaml, with the UI form's fields laid over it, then `--set`-style overrides."""
    from detops.config.loader import apply_override, read_raw

    root = Path(workspace).resolve()
    params_file = root / "params.yaml"
    if not changes_of(params):  # the form's default, an empty overlay: params.yaml as it is
        return Workspace.at(root, load_params(params_file if params_file.is_file() else None, overrides))
    raw = overlay(read_raw(params_file) if params_file.is_file() else {}, params)
    for item in overrides:
        apply_override(raw, item)
    return Workspace.at(root, validate_params(raw, source=f"{params_file} + UI parameters"))


def uses_embedded_sample(ws: Workspace) -> bool:
    return ws.resolve(ws.params.import_.source).resolve() == ws.output("sample", "dataset").resolve()


@flow(name="retrain")
def retrain(workspace: str = ".", params: ParamsOverlay = ParamsOverlay(),
            overrides: list[str] | None = None, batch: str | None = None) -> dict[str, Any]:
    """Retrain, evaluate, export and (if it beats the champion) promote the detector of a workspace.

    `params`: fields to change for this run (the rest comes from the workspace's params.yaml).
    `overrides`: the same as `--set key=value` strings.
    `batch`: a data batch in the landing folder (drift-triggered runs): a labelled batch joins the dataset
    first; an unlabelled one ends the run with the list of images to label, and no retraining.
    """
    ws = workspace_for(workspace, params, list(overrides or []))
    logger = get_run_logger()
    verbs = (("sample",) if uses_embedded_sample(ws) else ()) + RETRAIN
    sync_dvc = dvc_repo(ws) and params_are_the_file(ws)
    notes = [] if sync_dvc or not dvc_repo(ws) else [
        "dvc.lock left as it was: this run's params differ from params.yaml (lineage in MLflow)"]
    results: dict[str, StepResult] = {}
    # the commit as the run found it: its own dvc.lock and .gitignore updates must not read as the user's edits
    with workspace_lock(ws.root), loop_state(ws), git_state_at_start(ws.root):
        if batch and interrupted_training(ws):
            # a training killed before this run took the lock (a crashed run Prefect starts again may queue behind
            # this one): its data goes on first, so it resumes instead of being set aside by the batch's new data
            logger.info("an interrupted training is in the workspace: it goes on first, then batch %s", batch)
            first = run_pipeline(ws, verbs, sync_dvc, notes)
            promoted = "; ".join(first["promote"].notes) or "done"
            notes.append(f"an interrupted training went on first, on the data it had (promote: {promoted})")
        if batch:
            outcome = take_batch(ws, batch)
            emit_accuracy_event(ws, outcome.production)  # the champion's accuracy on the batch's share dropped
            if not outcome.labelled:
                return labels_needed(ws, outcome)
            if dvc_repo(ws) and outcome.accepted is not None:
                add(ws, outcome.accepted)
            notes.append(f"batch {batch}: {len(outcome.images)} labelled image(s) joined the dataset "
                         f"({ws.relative(outcome.accepted or ws.root)})")
            notes.extend(outcome.notes)  # the label audit: its page, and what went back for review
        results = run_pipeline(ws, verbs, sync_dvc, notes)
    for note in notes:
        logger.info(note)
    create_markdown_artifact(key="detops-retrain", markdown=summary_markdown(results, notes),
                             description="retrain summary")
    print_summary(ws, results, notes)
    return {verb: result.to_dict() for verb, result in results.items()}


def interrupted_training(ws: Workspace) -> bool:
    """Whether a killed `train` left its resume checkpoint, here or in paths.resume_store."""
    from detops.training.resume import interrupted

    return interrupted(ws.root, ws.params.paths.resume_store)


def run_pipeline(ws: Workspace, verbs: tuple[str, ...], sync_dvc: bool, notes: list[str]) -> dict[str, StepResult]:
    """Every step, each committed to dvc.lock (`sync_dvc`), then lineage, the promotion event and the push."""
    logger = get_run_logger()
    results: dict[str, StepResult] = {}
    if sync_dvc:  # dvc.yaml's code deps: what `dvc repro` writes first, from the code this run imports
        sync_code_fingerprints(ws)
    restore = sync_dvc and remote(ws) is not None  # a stage run before (on any machine) is restored
    if restore:
        pull_run_cache(ws)
    try:
        for verb in verbs:
            logger.info("step %s", verb)
            results[verb] = run_step(ws, verb, restore=restore)
            if sync_dvc:
                commit_stage(ws, verb)
    finally:  # a failed run gets its page too: the validation failures are what people need to see
        notes.append(f"run report (offline page): {ws.relative(build_run_page(ws))}")
    tag_training_run(ws, with_dvc_lock=sync_dvc)
    emit_promotion_event(ws, results["promote"])
    if sync_dvc:
        notes.append(push(ws))
        if ws.params.deploy.git_push:
            notes.append(push_lock_branch(ws, ws.params.deploy.git_push, str(flow_run.get_name() or "local")))
    return results


def labels_needed(ws: Workspace, outcome: BatchOutcome) -> dict[str, Any]:
    """The drift-triggered run of an unlabelled batch: what to label (a file and an artifact), no retraining."""
    message = f"drift found, labels needed: batch {outcome.batch} has {len(outcome.images)} unlabelled image(s)"
    shown = "\n".join(f"- `{name}`" for name in outcome.images[:200])
    more = f"\n- ... and {len(outcome.images) - 200} more" if len(outcome.images) > 200 else ""
    listing = ws.relative(outcome.to_label or ws.root)
    create_markdown_artifact(key="detops-labels-needed", description=message,
                             markdown=f"### {message}\n\nFull list: `{listing}`\n\n{shown}{more}")
    get_run_logger().warning("%s; the list is in %s", message, listing)
    return {"result": "drift found, labels needed", "batch": outcome.batch, "images_to_label": outcome.images,
            "list": listing}


def tag_training_run(ws: Workspace, with_dvc_lock: bool = False) -> None:
    """Lineage: which Prefect flow run and deployment produced the MLflow run, and (`with_dvc_lock`) the dvc.lock
    this run left, naming every data version, so a run in a pod that is gone can be checked out again."""
    from detops.tracking import mlflow_client, read_run_id

    run_id = read_run_id(ws)
    if not run_id:
        return
    client = mlflow_client(ws)
    if with_dvc_lock and (ws.root / "dvc.lock").is_file():
        client.log_artifact(run_id, str(ws.root / "dvc.lock"))
    client.set_tag(run_id, "prefect.flow_run_id", str(flow_run.get_id() or ""))
    client.set_tag(run_id, "prefect.flow_run_name", str(flow_run.get_name() or ""))
    client.set_tag(run_id, "prefect.deployment", str(deployment.get_name() or "none (ad hoc run)"))


def summary_markdown(results: dict[str, StepResult], notes: list[str]) -> str:
    return "\n\n".join([*(result.to_markdown() for result in results.values()), *(f"- {n}" for n in notes)])


def print_summary(ws: Workspace, results: dict[str, StepResult], notes: list[str]) -> None:
    """The one-screen summary at the end of a run: each step's headline numbers, then where to look."""
    from rich.table import Table

    from detops.console import out_console
    from detops.tracking import tracking_uri

    table = Table(title="detops retrain", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("result")
    for verb, result in results.items():
        shown = list(result.metrics.items())[:6]
        table.add_row(verb, "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown))
    console = out_console()
    console.print(table)
    for note in notes:
        console.print(f"• {note}", markup=False, highlight=False)
    console.print(f"MLflow: mlflow ui --backend-store-uri {tracking_uri(ws)}   Prefect: prefect server start   "
                  f"reports: {ws.relative(ws.reports)}/", markup=False, highlight=False)


if __name__ == "__main__":
    retrain()
