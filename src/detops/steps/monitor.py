"""Step `monitor`: do new images look like the reference? Image features compared by Evidently, one verdict.

What is checked: the batch named (`detops monitor --batch NAME`, checked again when the ledger has it already),
else `monitor.current` (a canonical dataset json), else every new complete batch in the landing folder (none: `no
drift`, saying so). Each check writes `<NAME>/` under the step's `batches` output (or its `current` folder): the
Evidently report as `report.html` and `report.json`, the batch's `features.parquet`, `check.json` and, with
chromium, `screenshot.png`; and logs an MLflow run named `monitor`. The `verdict` output sums up the whole run, and
each checked batch is recorded in the ledger so it is checked and announced once. Where each output lives is
declared in `detops.steps.graph`. The run page is not rebuilt here: the flows and `detops report` build it.

Beside the image features, the champion's answers on each image are tested (`monitoring.predictions`): the
answers `detops serve` captured with the batch, else the champion run on it, against the prediction reference
logged with the champion at its registration. Without a champion (or its reference) those columns are skipped,
with a note.

The reference is loaded once per run, however many batches it checks: pass `batches` to check several.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import atomic_dir, write_json
from detops.dataset.canonical import Dataset, read_dataset
from detops.formats.source import listing
from detops.monitoring.batches import find_batch, ledger, new_batches, read_batch
from detops.monitoring.features import dataset_features, embedder_for
from detops.monitoring.predictions import (
    ChampionPredictions,
    beside,
    captured_frame,
    champion_predictions,
    model_answers,
    read_captured,
    reference_classes,
    side_by_side,
)
from detops.monitoring.reference import load_reference
from detops.monitoring.verdict import DRIFT, INSUFFICIENT, NO_DRIFT, decide
from detops.steps.result import StepResult
from detops.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from detops.monitoring.embeddings import Embedder


@dataclass
class Target:
    """Data to check: a batch (read from its own labels, if any) or a dataset json."""

    folder: Path  # where the check's reports go
    source: str  # what was read, relative to the workspace
    dataset: Dataset
    format: str
    batch: str | None = None
    root: Path | None = None  # the batch's folder (captured answers live there)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run(ws: Workspace, batch: str | None = None, batches: Sequence[str] = ()) -> StepResult:
    """Check `batch`, or each of `batches` (checked again when the ledger has them already), else what the params
    and the landing folder hold."""
    params = ws.params.monitor
    targets = _targets(ws, [batch] if batch else list(batches))
    verdict_file = ws.output("monitor", "verdict")
    if not targets:
        message = (f"no new complete batch in {params.landing} (a batch is a folder holding {params.manifest}): "
                   "nothing to check")
        write_json(verdict_file, {"verdict": NO_DRIFT, "message": message, "checks": []})
        return StepResult("monitor", {"verdict": ws.relative(verdict_file)}, {"verdict": NO_DRIFT, "checks": 0},
                          [message])
    embedder = embedder_for(ws)
    reference, reference_source = load_reference(ws, embedder)
    with tempfile.TemporaryDirectory(prefix="detops-monitor-") as tmp:
        champion, skipped = champion_predictions(ws, Path(tmp))
        checks = [_check(ws, t, reference, reference_source, embedder, champion, skipped) for t in targets]
    _record(ws, checks)
    verdicts = {c["verdict"] for c in checks}
    overall = next(v for v in (DRIFT, NO_DRIFT, INSUFFICIENT) if v in verdicts)
    lines = [f"{c['source']}: {c['verdict']} ({c['reason']})" for c in checks]
    write_json(verdict_file, {"verdict": overall, "message": "; ".join(lines), "reference": reference_source,
                              "checks": checks})

    drifted = sorted({col for c in checks for col in c["drifted_columns"]})
    outputs = {"verdict": ws.relative(verdict_file)}
    if len(checks) == 1 and checks[0]["reports"].get("html"):
        outputs |= {"report": checks[0]["reports"]["html"]}
    notes = lines + [n for c in checks for n in c["notes"]]
    notes += [f"{c['source']}: {len(c['skipped'])} unreadable image(s) skipped: {listing(c['skipped'])}"
              for c in checks if c["skipped"]]
    metrics: dict[str, Any] = {
        "verdict": overall,
        "checks": len(checks),
        "drifted_columns": ", ".join(drifted) or "none",
        "images": sum(c["images"] for c in checks),
        "skipped_images": sum(len(c["skipped"]) for c in checks),
    }
    return StepResult("monitor", outputs, metrics, notes)


def _targets(ws: Workspace, batches: list[str]) -> list[Target]:
    if batches:
        return [_batch_target(ws, name) for name in batches]
    if ws.params.monitor.current:
        path = ws.resolve(ws.params.monitor.current)
        dataset = read_dataset(path)
        return [Target(ws.output("monitor", "current"), ws.relative(path), dataset,
                       str(dataset.get("info", {}).get("source_format", "")))]
    return [_batch_target(ws, b.name) for b in new_batches(ws)]


def _batch_target(ws: Workspace, name: str) -> Target:
    data = read_batch(ws, find_batch(ws, name))
    return Target(ws.output("monitor", "batches") / name, ws.relative(data.batch.path), data.dataset,
                  data.format, name, data.batch.path, data.skipped, data.notes)


def _check(ws: Workspace, target: Target, reference: pd.DataFrame, reference_source: str,
           embedder: Embedder | None, champion: ChampionPredictions | None, no_champion: str) -> dict[str, Any]:
    """Compare one target with the reference; write its folder, log its MLflow run."""
    from detops.monitoring.drift import compare
    from detops.monitoring.mlflow_log import log_check

    params = ws.params.monitor
    table = dataset_features(ws, target.dataset, embedder, f"Features of {target.source}")
    predictions: dict[str, Any] = {"source": None, "reference": None, "note": no_champion}
    if champion is not None and not table.frame.empty:
        frame, predictions = _predictions(ws, target, champion)
        table.frame = beside(table.frame, frame)
        reference = side_by_side(reference, champion.reference)
    folder = target.folder
    check: dict[str, Any] = {
        "source": target.source, "batch": target.batch, "format": target.format, "labelled": table.labelled,
        "images": len(table.frame), "reference": {"source": reference_source, "images": len(reference)},
        "skipped": target.skipped + table.skipped, "notes": list(target.notes), "predictions": predictions,
        "rule": {"drift_share": params.drift_share, "critical_columns": params.critical_columns},
        "drifted_columns": [], "comparison": None, "reports": {},
    }
    if predictions["note"]:
        check["notes"].append(predictions["note"])
    with atomic_dir(folder) as tmp:
        if not table.frame.empty:
            table.frame.to_parquet(tmp / "features.parquet")
            check["reports"]["features"] = ws.relative(folder / "features.parquet")
        short = _too_few(len(table.frame), len(reference), target.source, reference_source, params.min_batch_size)
        if short:
            check |= {"verdict": INSUFFICIENT, "reason": short}
        else:
            comparison = compare(reference, table.frame, params, tmp / "report.html", tmp / "report.json")
            verdict, reason = decide(comparison.drifted, comparison.tested, comparison.share, params)
            check |= {"verdict": verdict, "reason": reason, "drifted_columns": comparison.drifted,
                      "comparison": comparison.to_dict()}
            check["notes"] += comparison.notes
            check["reports"] |= {"html": ws.relative(folder / "report.html"),
                                 "json": ws.relative(folder / "report.json")}
            if _screenshot(tmp / "report.html", tmp / "screenshot.png", params.screenshot, check["notes"]):
                check["reports"]["screenshot"] = ws.relative(folder / "screenshot.png")
        write_json(tmp / "check.json", check)
    check["mlflow_run_id"] = log_check(ws, check, folder)
    return check


def _predictions(ws: Workspace, target: Target, champion: ChampionPredictions) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The prediction columns of the target's images: the answers captured with it when it has them (what the
    server answered, no model run), else the champion's, run here. And where they came from."""
    reference = f"{champion.label}, its test split at registration ({len(champion.reference)} images)"
    answers = read_captured(target.root) if target.root is not None else None
    if answers is None:
        frame = model_answers(ws, champion.model_file, target.dataset, f"{champion.label} on {target.source}")
        return frame, {"source": f"{champion.label} run on the images", "reference": reference, "note": ""}
    versions = sorted({a.version for a in answers})
    classes = reference_classes(champion.reference)
    frame = captured_frame(answers, classes, ws.params.monitor.low_score, ws.params.predict.score_threshold)
    notes = []
    if versions != [champion.version]:
        notes.append(f"the captured answers come from version(s) {', '.join(versions)}, the reference from "
                     f"{champion.label}: a prediction drift may be the change of model")
    threshold = ws.params.predict.score_threshold
    if any(a.score_threshold > threshold for a in answers):
        notes.append(f"some answers were captured with a score threshold above today's predict.score_threshold "
                     f"({threshold}): they lack the boxes in between, so pred_count reads low")
    note = "; ".join(notes)
    return frame, {"source": f"captured answers of version(s) {', '.join(versions)}", "reference": reference,
                   "note": note}


def _record(ws: Workspace, checks: list[dict[str, Any]]) -> None:
    """Each checked batch in the ledger, once every check of the run is done: a run that fails half-way records
    none, so the next one checks them all again and no batch is left checked but never announced."""
    for check in checks:
        if check["batch"]:
            ledger(ws).record(check["batch"], {
                "verdict": check["verdict"], "drifted_columns": check["drifted_columns"], "images": check["images"],
                "skipped": len(check["skipped"]), "format": check["format"], "labelled": check["labelled"],
                "report": check["reports"].get("html"), "mlflow_run_id": check["mlflow_run_id"],
            })


def _too_few(rows: int, reference_rows: int, source: str, reference_source: str, minimum: int) -> str:
    """Why a check has too little data to say anything, or '' when it has enough."""
    if rows < minimum:
        return f"{rows} readable image(s) in {source}, fewer than monitor.min_batch_size={minimum}"
    if reference_rows < minimum:
        return f"{reference_rows} image(s) in the reference {reference_source}, fewer than monitor.min_batch_size"
    return ""


def _screenshot(html: Path, png: Path, wanted: bool | str, notes: list[str]) -> bool:
    """A PNG of the report: always when wanted is True (failing without chromium), when possible under auto."""
    from detops.monitoring.browser import BrowserError, find_chromium, screenshot

    if wanted is False or (wanted == "auto" and find_chromium() is None):
        if wanted == "auto":
            notes.append("no screenshot of the report: chromium is not installed (apt-get install -y chromium)")
        return False
    try:
        screenshot(html, png)
    except BrowserError as exc:
        if wanted is True:
            raise
        notes.append(f"no screenshot of the report: {exc}")
        return False
    return True
