"""The retraining flow: sample (when training on the embedded sample) -> import -> validate -> split ->
train -> evaluate -> export. Runs without a server (Prefect's temporary local API) unless PREFECT_API_URL is set.

`python -m flows.retrain` is what `make demo` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from detops.config import Params, load_params
from detops.steps.result import StepResult
from detops.workspace import Workspace
from tasks import run_step

PIPELINE = ("import", "validate", "split", "train", "evaluate", "export")


def workspace_for(workspace: str, params: Params | None, overrides: list[str]) -> Workspace:
    """Typed params from the UI form win; otherwise the workspace's params.yaml plus overrides."""
    root = Path(workspace).resolve()
    if params is None:
        params_file = root / "params.yaml"
        params = load_params(params_file if params_file.is_file() else None, overrides)
    return Workspace.at(root, params)


def uses_embedded_sample(ws: Workspace) -> bool:
    return ws.resolve(ws.params.import_.source).resolve() == (ws.raw / ws.params.sample.name).resolve()


@flow(name="retrain")
def retrain(workspace: str = ".", params: Params | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Retrain the detector on the workspace's dataset, evaluate and export it; returns each step's result."""
    ws = workspace_for(workspace, params, list(overrides or []))
    logger = get_run_logger()
    verbs = (("sample",) if uses_embedded_sample(ws) else ()) + PIPELINE
    results: dict[str, StepResult] = {}
    for verb in verbs:
        logger.info("step %s", verb)
        results[verb] = run_step(ws, verb)
    summary = summary_markdown(results)
    create_markdown_artifact(key="detops-retrain", markdown=summary, description="retrain summary")
    print_summary(results)
    return {verb: result.to_dict() for verb, result in results.items()}


def summary_markdown(results: dict[str, StepResult]) -> str:
    return "\n\n".join(result.to_markdown() for result in results.values())


def print_summary(results: dict[str, StepResult]) -> None:
    """The one-screen summary at the end of a run: each step's headline numbers."""
    from rich.table import Table

    from detops.console import out_console

    table = Table(title="detops retrain", title_justify="left")
    table.add_column("step", style="bold")
    table.add_column("result")
    for verb, result in results.items():
        shown = list(result.metrics.items())[:6]
        table.add_row(verb, "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown))
    out_console().print(table)


if __name__ == "__main__":
    retrain()
