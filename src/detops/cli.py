"""`detops` command line: one command per pipeline verb, all reading the same params.yaml.

Heavy libraries (torch, mlflow, prefect, great_expectations, evidently) are imported inside the
steps, never here, so `detops --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

if TYPE_CHECKING:
    from detops.errors import DetopsError
    from detops.steps.result import StepResult
    from detops.workspace import Workspace

app = typer.Typer(
    name="detops",
    help="Workflow-orchestrated MLOps pipeline for object detection.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _Globals:
    params_file: Path = Path("params.yaml")
    overrides: tuple[str, ...] = ()
    workspace: Path = Path(".")


@app.callback()
def main(
    params: Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read.")] = Path("params.yaml"),
    set_: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option("--set", "-s", help="Override a param, e.g. --set train.epochs=3 (repeatable)."),
    ] = None,
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Workspace root.")] = Path("."),
) -> None:
    """Every command reads [bold]params.yaml[/] (validated, overridable with --set) in the workspace."""
    _Globals.workspace = workspace
    _Globals.params_file = params if params.is_absolute() else workspace / params
    _Globals.overrides = tuple(set_ or ())


def _workspace(extra: tuple[str, ...] = ()) -> Workspace:
    from detops.config import load_params
    from detops.workspace import Workspace

    path = _Globals.params_file if _Globals.params_file.exists() else None
    if path is None and _Globals.params_file != _Globals.workspace / "params.yaml":
        path = _Globals.params_file  # an explicit --params that is missing is an error
    params = load_params(path, (*_Globals.overrides, *extra))
    return Workspace.at(_Globals.workspace, params)


def _run_step(module: str, extra: tuple[str, ...] = (), **options: Any) -> None:
    """Load params, run `detops.steps.<module>.run`, print its summary; user errors exit cleanly."""
    from detops.errors import DetopsError

    try:
        ws = _workspace(extra)
        step = importlib.import_module(f"detops.steps.{module}")
        result = step.run(ws, **options)
    except DetopsError as exc:
        _exit_with(exc)
    _print_result(result)


def _exit_with(exc: DetopsError) -> NoReturn:
    """A user error: its message in red, no traceback, the error's exit code."""
    from rich.text import Text

    from detops.console import err_console

    err_console().print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False)
    raise typer.Exit(exc.exit_code) from None


def _print_result(result: StepResult) -> None:
    from rich.table import Table

    from detops.console import out_console

    table = Table(title=f"detops {result.step}", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in result.metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for key, path in result.outputs.items():
        table.add_row(key, path, style="dim")
    out_console().print(table)
    for note in result.notes:
        out_console().print(f"• {note}", highlight=False, markup=False)


def _set(key: str, value: object | None) -> tuple[str, ...]:
    """A CLI flag is just a params override, so the flag and params.yaml can never disagree."""
    return () if value is None else (f"{key}={value}",)


@app.command()
def sample() -> None:
    """Write the deterministic synthetic dataset to data/raw/<sample.name>/ (COCO format)."""
    _run_step("sample")


@app.command("import")
def import_(
    source: Annotated[Optional[str], typer.Argument(help="Dataset root; default: import.source.")] = None,  # noqa: UP045
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="coco, yolo or voc.")] = None,  # noqa: UP045
    annotations: Annotated[
        Optional[str], typer.Option(help="COCO json / YOLO data.yaml or classes.txt inside SOURCE.")  # noqa: UP045
    ] = None,
) -> None:
    """Read a COCO, YOLO or Pascal VOC dataset into the canonical COCO json (data/prepared/dataset.json)."""
    extra = _set("import.source", source) + _set("import.format", fmt) + _set("import.annotations", annotations)
    _run_step("import_", extra)


@app.command("export-dataset")
def export_dataset(
    fmt: Annotated[str, typer.Option("--format", "-f", help="coco, yolo or voc.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (must not exist or be empty).")],
    dataset: Annotated[
        Optional[Path], typer.Option(help="Canonical json; default: data/prepared/dataset.json.")  # noqa: UP045
    ] = None,
) -> None:
    """Write the canonical dataset back out as COCO, YOLO or Pascal VOC."""
    _run_step("export_dataset", fmt=fmt, out=out, dataset=dataset)


@app.command()
def validate() -> None:
    """Data quality gate (Great Expectations): fail on bad boxes or drop them, per validate.on_error."""
    _run_step("validate")


@app.command()
def split() -> None:
    """Leakage-safe stratified train/val/test split that keeps old images in place as data grows."""
    _run_step("split")


@app.command()
def train(
    resume: Annotated[bool, typer.Option("--resume", help="Continue from models/last.ckpt.")] = False,
) -> None:
    """Train the detector (timm backbone, FPN, anchor-free head) with Lightning; tracked in MLflow."""
    _run_step("train", resume=resume)


@app.command()
def evaluate() -> None:
    """COCO mAP on the test split, PR curves, confusion matrix and a prediction grid."""
    _run_step("evaluate")


@app.command()
def export() -> None:
    """ONNX FP32/FP16/INT8 and TensorRT files of models/best.ckpt, each scored on the test split and timed."""
    _run_step("export")


@app.command()
def predict(
    source: Annotated[Path, typer.Argument(help="An image file or a folder of images (searched recursively).")],
    model: Annotated[str, typer.Option("--model", "-m", help="A checkpoint, .onnx file or TensorRT engine.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for predictions.json (and images/).")] = Path(
        "predictions"),
    draw: Annotated[bool, typer.Option("--draw", help="Also write each image with its boxes drawn.")] = False,
) -> None:
    """Run any exported model on images: COCO results json (original pixels), optionally drawn boxes."""
    from dataclasses import replace

    from detops.errors import DetopsError

    try:
        ws = _workspace()
        from detops.inference.folder import predict_folder
        from detops.inference.loading import load_predictor

        predictor = load_predictor(Path(model).resolve())
        predictor.thresholds = replace(predictor.meta.deployment(), score_threshold=ws.params.predict.score_threshold)
        done = predict_folder(predictor, source.resolve(), out.resolve(), ws.params.predict.batch_size, draw)
    except DetopsError as exc:
        _exit_with(exc)
    from detops.console import out_console

    out_console().print(f"{done.images} images, {done.detections} detections ({predictor.runtime_name}, score ≥ "
                        f"{predictor.thresholds.score_threshold:g}) -> {done.results}"
                        + (f", drawn in {done.drawn}" if done.drawn else ""), highlight=False)


@app.command()
def promote() -> None:
    """Register the model in MLflow and move the champion alias if it beats the champion."""
    _run_step("promote")


@app.command()
def monitor() -> None:
    """Evidently drift report between training data and new data."""
    _run_step("monitor")


@app.command("params")
def show_params(
    defaults: Annotated[bool, typer.Option("--defaults", help="Print the built-in defaults as YAML.")] = False,
) -> None:
    """Print the effective params (params.yaml + --set), or the commented defaults."""
    import yaml

    from detops.config import dump_defaults
    from detops.errors import DetopsError

    if defaults:
        typer.echo(dump_defaults())
        return
    try:
        typer.echo(yaml.safe_dump(_workspace().params.to_dict(), sort_keys=False))
    except DetopsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


registry_app = typer.Typer(
    help="MLflow model registry: versions, rollback, pruning (aliases only, never stages).",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


def _registry(action: str, **options: Any) -> Any:
    """Run `detops.registry.commands.<action>(ws, ...)`; user errors exit cleanly, mlflow is imported only here."""
    from detops.errors import DetopsError

    try:
        ws = _workspace()
        commands = importlib.import_module("detops.registry.commands")
        return ws, getattr(commands, action)(ws, **options)
    except DetopsError as exc:
        _exit_with(exc)


@registry_app.command("list")
def registry_list() -> None:
    """Versions of mlflow.registered_model: aliases, promote.metric, data hash, creation time."""
    from detops.console import out_console

    _, table = _registry("list_table")
    out_console().print(table)


@registry_app.command("rollback")
def registry_rollback(
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded as a tag on both versions.")],
    to: Annotated[
        Optional[str], typer.Option("--to", help="Version to restore; default: previous-champion.")  # noqa: UP045
    ] = None,
) -> None:
    """Move the champion back to previous-champion (or --to VERSION); the demoted version becomes previous."""
    from detops.console import out_console
    from detops.registry.commands import rollback_message

    ws, change = _registry("rollback_registry", reason=reason, to_version=to)
    out_console().print(rollback_message(ws, change), highlight=False, markup=False)


@registry_app.command("prune")
def registry_prune(
    keep: Annotated[int, typer.Option("--keep", min=0, help="Newest versions to keep.")],
) -> None:
    """Delete old versions and their artifacts; never the champion, the previous champion or the newest N."""
    from detops.console import out_console

    _, result = _registry("prune_registry", keep=keep)
    console = out_console()
    deleted = ", ".join(result.deleted) or "none"
    console.print(f"deleted version(s): {deleted}; kept: {', '.join(result.kept) or 'none'}", highlight=False)
    for note in result.notes:
        console.print(f"• {note}", highlight=False, markup=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
