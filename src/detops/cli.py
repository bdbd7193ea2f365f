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
    # Paths typed on the command line are relative to where they were typed; the default params.yaml is the
    # workspace's own (paths inside params.yaml stay relative to the workspace).
    _Globals.params_file = workspace / params if params == Path("params.yaml") else params.resolve()
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
    """Load params, run `detops.steps.<module>.run` (library prints to its log), print its summary; user errors exit
    cleanly."""
    from detops.errors import DetopsError
    from detops.locking import workspace_lock
    from detops.monitoring.loopstate import loop_state
    from detops.steplog import step_log

    try:
        ws = _workspace(extra)
        step = importlib.import_module(f"detops.steps.{module}")
        with workspace_lock(ws.root), loop_state(ws), step_log(ws, module.rstrip("_")):  # library prints: reports/logs/
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


def _say(text: str) -> None:
    """A line of data on stdout, printed as it is: no rich markup or highlighting in names, paths and numbers."""
    from detops.console import out_console

    out_console().print(text, highlight=False, markup=False)


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
        _say(f"• {note}")


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
    typed = str(Path(source).resolve()) if source is not None else None  # relative to the shell, not -w
    extra = _set("import.source", typed) + _set("import.format", fmt) + _set("import.annotations", annotations)
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
    _run_step("export_dataset", fmt=fmt, out=out.resolve(), dataset=dataset.resolve() if dataset else None)


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
    resume: Annotated[bool, typer.Option(
        "--resume", help="Fail instead of starting over when no interrupted run with the same params, data and code "
        "left a checkpoint (one that did is always gone on from).")] = False,
) -> None:
    """Train the detector (timm backbone, FPN, anchor-free head) with Lightning; tracked in MLflow."""
    _run_step("train", resume=resume)


@app.command("node-inputs", hidden=True)
def node_inputs(url: Annotated[str, typer.Argument(help="The prefix node 0 uploaded to.")]) -> None:
    """Download what node 0 of a multi-node run uploaded into this workspace (a Job's pod, before torchrun)."""
    from detops.errors import DetopsError
    from detops.training.nodes import download_inputs

    try:
        _say(f"{download_inputs(url, _Globals.workspace.resolve())} input file(s) from {url}")
    except DetopsError as exc:
        _exit_with(exc)


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
    model: Annotated[str, typer.Option("--model", "-m", help=(
        "A checkpoint, .onnx file or TensorRT engine; or a registered model: an alias of mlflow.registered_model"
        " (champion), models:/<name>/<version> or models:/<name>@<alias>."))],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for predictions.json (and images/).")] = Path(
        "predictions"),
    draw: Annotated[bool, typer.Option("--draw", help="Also write each image with its boxes drawn.")] = False,
) -> None:
    """Run any exported model on images: COCO results json (original pixels), optionally drawn boxes."""
    from detops.errors import DetopsError

    try:
        ws = _workspace()
        from detops.inference.folder import predict_folder
        from detops.inference.loading import load_predictor
        from detops.registry.resolve import local_model

        with local_model(ws, model) as (path, label):
            predictor = load_predictor(path).with_thresholds(score_threshold=ws.params.predict.score_threshold)
        done = predict_folder(predictor, source.resolve(), out.resolve(), ws.params.predict.batch_size, draw)
    except DetopsError as exc:
        _exit_with(exc)
    from detops.console import out_console

    out_console().print(f"{label}: {done.images} images, {done.detections} detections ({predictor.runtime_name}, "
                        f"score ≥ {predictor.thresholds.score_threshold:g}) -> {done.results}"
                        + (f", drawn in {done.drawn}" if done.drawn else ""), highlight=False)


@app.command()
def promote() -> None:
    """Register the model in MLflow and move the champion alias if it beats the champion."""
    _run_step("promote")


@app.command()
def serve(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=(  # noqa: UP045
        "champion (any alias of mlflow.registered_model, followed: hot swap when it moves), models:/<name>@<alias>,"
        " models:/<name>/<version> or a model file; default: serve.model."))] = None,
    host: Annotated[Optional[str], typer.Option(help=(  # noqa: UP045
        "127.0.0.1, 0.0.0.0 or ::; default: serve.host (loopback)."))] = None,
    port: Annotated[Optional[int], typer.Option(help="TCP port; default: serve.port.")] = None,  # noqa: UP045
) -> None:
    """Serve a registered model over HTTP (POST /predict, GET /health, /model, /metrics, /docs) until Ctrl+C or
    SIGTERM: one process; scale with replicas (deployments/k8s)."""
    from detops.errors import DetopsError

    if model is not None and Path(model).exists():
        model = str(Path(model).resolve())  # a file typed on the command line is relative to the shell, not -w
    extra = _set("serve.model", model) + _set("serve.host", host) + _set("serve.port", port)
    try:
        ws = _workspace(extra)
        from detops.serving.server import serve as run_server

        run_server(ws)  # no workspace lock: a server only reads, and runs for days
    except DetopsError as exc:
        _exit_with(exc)


@app.command()
def monitor(
    batch: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Check this batch (a folder under monitor.landing), even if checked before."),
    ] = None,
) -> None:
    """Drift check of new data against the reference (Evidently report, verdict in reports/drift/verdict.json)."""
    _run_step("monitor", batch=batch)


@app.command()
def report() -> None:
    """Write reports/index.html: every step's report on one page that opens offline (no script, no CDN)."""
    from detops.console import out_console
    from detops.errors import DetopsError
    from detops.reporting.page import build_run_page

    try:
        ws = _workspace()
        page = build_run_page(ws)  # no workspace lock: it only reads reports, and the flow calls it holding one
    except DetopsError as exc:
        _exit_with(exc)
    out_console().print(f"run report: {ws.relative(page)} (open it in a browser; it needs no network)",
                        highlight=False)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON, for scripts.")] = False,
    serve: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional on Python 3.10
        typer.Option("--serve", help="A `detops serve` replica's URL: the version it serves (repeatable)."),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each server.")] = 3.0,
) -> None:
    """Where the loop stands: registry aliases, each landing batch's state, Label Studio, deployments, replicas."""
    import json

    from detops.console import out_console
    from detops.errors import DetopsError
    from detops.status import collect, render

    try:
        state = collect(_workspace(), list(serve or ()), timeout)
    except DetopsError as exc:
        _exit_with(exc)
    if as_json:
        sys.stdout.write(json.dumps(state, indent=2) + "\n")
        return
    for part in render(state):
        out_console().print(part)


@app.command("dvc-yaml")
def dvc_yaml(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if dvc.yaml differs from the declaration.")] = False,
) -> None:
    """Write the workspace's dvc.yaml from the step graph (detops.steps.graph), the one declaration of the steps."""
    from detops.pipeline import dvc_yaml as generate

    root = _Globals.workspace.resolve()
    text, target = generate(), root / "dvc.yaml"
    if check:
        same = target.is_file() and target.read_text(encoding="utf-8") == text
        typer.echo(f"{target}: {'up to date' if same else 'differs from the step graph: run `detops dvc-yaml`'}")
        raise typer.Exit(0 if same else 1)
    from detops.atomic import write_text

    write_text(target, text)
    typer.echo(f"wrote {target}")


@app.command("code-fingerprint", hidden=True)
def code_fingerprint() -> None:
    """Write .detops/code/<step>.sha256, the code deps of dvc.yaml: the installed code and library versions."""
    from detops.pipeline import write_code_fingerprints

    ws = _workspace()
    for name, path in write_code_fingerprints(ws).items():
        typer.echo(f"{name}: {ws.relative(path)}")


@app.command()
def deploy(
    prefect_yaml: Annotated[Optional[Path], typer.Option(  # noqa: UP045
        "--prefect-yaml", help="Only write the deployments to FILE, for `prefect deploy --prefect-file FILE --all`.",
    )] = None,
) -> None:
    """Create or update the work pool, the deployments (retrain-scheduled, retrain-on-demand, drift-check,
    retrain-on-drift, labels-sync) and the notifications on the Prefect server PREFECT_API_URL names, from
    params.yaml's deploy section."""
    from detops.errors import DetopsError

    try:
        ws = _workspace()
        if prefect_yaml is not None:
            from detops.atomic import write_text
            from flows.deploy.spec import prefect_yaml as render

            write_text(prefect_yaml, render(ws.params))
            lines = [f"wrote {prefect_yaml}"]
        else:
            from flows.deploy.server import deploy as apply

            lines = apply(ws)
    except DetopsError as exc:
        _exit_with(exc)
    from detops.console import out_console

    for line in lines:
        out_console().print(line, highlight=False, markup=False, soft_wrap=True)


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
    from detops.registry.commands import rollback_message

    ws, change = _registry("rollback_registry", reason=reason, to_version=to)
    _say(rollback_message(ws, change))


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




label_app = typer.Typer(
    help="The labelling loop: what to label next, the Label Studio round trip, the label audit.",
    no_args_is_help=True,
)
app.add_typer(label_app, name="label")


def _typed_model(model: str | None) -> str | None:
    """A model file typed on the command line is relative to the shell, not -w."""
    return str(Path(model).resolve()) if model is not None and Path(model).exists() else model


@label_app.command("select")
def label_select(
    batch: Annotated[str, typer.Argument(help="An unlabelled batch: a folder under monitor.landing.")],
    budget: Annotated[Optional[int], typer.Option(  # noqa: UP045
        "--budget", min=1, help="Images to pick; default: label.budget.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=(  # noqa: UP045
        "Checkpoint or registry reference; default: label.model (empty: the champion)."))] = None,
) -> None:
    """Rank a batch's images for labelling: the champion's uncertainty times diversity over its embeddings."""
    from detops.errors import DetopsError

    try:
        ws = _workspace(_set("label.model", _typed_model(model)))
        from detops.labeling.select import select_batch
        from detops.monitoring.loopstate import loop_state

        with loop_state(ws):
            chosen = select_batch(ws, batch, budget)
    except DetopsError as exc:
        _exit_with(exc)
    from detops.console import out_console

    console = out_console()
    console.print(f"batch {batch}: {len(chosen.selected)} of {chosen.images} image(s) selected -> "
                  f"{ws.relative(chosen.file)}", highlight=False)
    for image in chosen.selected[:10]:
        console.print(f"{image.rank:>4}  {image.score:.4f}  {image.file_name}", highlight=False, markup=False)
    for note in chosen.notes:
        console.print(f"• {note}", highlight=False, markup=False)


@label_app.command("audit")
def label_audit(
    split: Annotated[str, typer.Option("--split", help=(
        "val or test (splits the champion never trained on), or a labelled batch under monitor.landing."))] = "val",
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=(  # noqa: UP045
        "Checkpoint or registry reference; default: label.model (empty: the champion)."))] = None,
) -> None:
    """cleanlab label audit: images ranked by label quality with their likely issue (reports/label_audit.html)."""
    from detops.errors import DetopsError

    try:
        ws = _workspace(_set("label.model", _typed_model(model)))
        from detops.labeling.audit import audit_files, audit_target, run_audit
        from detops.monitoring.loopstate import loop_state

        with loop_state(ws):
            dataset, source, batch = audit_target(ws, split)
            audit = run_audit(ws, dataset, source, batch)
    except DetopsError as exc:
        _exit_with(exc)
    summary = audit.to_dict()
    _say(f"{source}: {summary['flagged']} of {summary['images']} image(s) below label quality {audit.threshold:g} "
         f"{summary['issues']} -> {ws.relative(audit_files(ws, batch)[1])}")


@label_app.command("push")
def label_push(
    batch: Annotated[str, typer.Argument(help="An unlabelled batch: a folder under monitor.landing.")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=(  # noqa: UP045
        "Checkpoint or registry reference whose boxes pre-annotate the tasks; default: label.model (empty: the "
        "champion)."))] = None,
) -> None:
    """Import a batch's selected images into its Label Studio project as pre-annotated tasks, in ranked order;
    pushing again imports only images without a task. Token: LABEL_STUDIO_API_KEY."""
    from detops.errors import DetopsError

    try:
        ws = _workspace(_set("label.model", _typed_model(model)))
        from detops.labeling.push import preannotator, push
        from detops.labeling.studio import LabelStudio
        from detops.monitoring.loopstate import loop_state

        settings = ws.params.label_studio
        with LabelStudio.from_env(settings.url, settings.timeout_s) as studio, loop_state(ws):
            studio.find_project("")  # a server down or a wrong token fails before the model is loaded
            done = push(ws, batch, studio, preannotator(ws))
    except DetopsError as exc:
        _exit_with(exc)
    _say(f"batch {batch}: {done.imported} task(s) imported, {done.already} already in project {done.project} "
         f"(pre-annotations: model version {done.model_version}) -> {done.url}")


@label_app.command("review")
def label_review(
    batch: Annotated[str, typer.Argument(help="An accepted batch whose flagged images label.audit=review left out.")],
) -> None:
    """Send the images the label audit flagged back to Label Studio for review, worst first, pre-annotated with the
    labels under review; `detops label pull BATCH` brings them back as BATCH-reviewed. Token: LABEL_STUDIO_API_KEY."""
    from detops.errors import DetopsError

    try:
        ws = _workspace()
        from detops.labeling.review import push_review
        from detops.labeling.studio import LabelStudio
        from detops.monitoring.loopstate import loop_state

        settings = ws.params.label_studio
        with LabelStudio.from_env(settings.url, settings.timeout_s) as studio, loop_state(ws):
            done = push_review(ws, batch, studio)
    except DetopsError as exc:
        _exit_with(exc)
    _say(f"batch {batch}: {done.imported} flagged image(s) sent for review, {done.already} already in project "
         f"{done.project} -> {done.url}")


@label_app.command("pull")
def label_pull(
    batch: Annotated[str, typer.Argument(help="A batch pushed with `detops label push`.")],
) -> None:
    """Write a pushed batch's finished Label Studio annotations as a labelled batch in monitor.landing; with
    PREFECT_API_URL set, emit detops.batch.labelled (retrain-on-drift takes it)."""
    import os

    from detops.errors import DetopsError

    try:
        ws = _workspace()
        from detops.labeling.pull import pull
        from detops.labeling.studio import LabelStudio
        from detops.locking import workspace_lock
        from detops.monitoring.loopstate import loop_state

        settings = ws.params.label_studio
        with LabelStudio.from_env(settings.url, settings.timeout_s) as studio, workspace_lock(ws.root), \
                loop_state(ws):
            done = pull(ws, batch, studio)
    except DetopsError as exc:
        _exit_with(exc)
    from detops.console import out_console

    console = out_console()
    for dropped in done.dropped:
        console.print(f"batch {batch}: left out {dropped}", highlight=False, markup=False, soft_wrap=True)
    if done.labelled is None:
        console.print(f"batch {batch}: {done.finished} of {done.tasks} task(s) finished, {done.skipped} skipped in "
                      f"project {done.project}; nothing written until every task is done", highlight=False)
        return
    console.print(f"batch {batch}: {done.images} image(s), {done.boxes} box(es) -> labelled batch {done.labelled}",
                  highlight=False, markup=False)
    if not os.environ.get("PREFECT_API_URL"):
        console.print(f"PREFECT_API_URL is not set: no event emitted; retrain with it: python -c 'from flows.retrain "
                      f"import retrain; retrain(batch=\"{done.labelled}\")'", highlight=False, markup=False)
        return
    from prefect.events.worker import EventsWorker

    from flows.events import emit_labelled_event

    emit_labelled_event(ws, done)
    EventsWorker.drain_all()
    console.print(f"detops.batch.labelled emitted: retrain-on-drift takes {done.labelled}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
