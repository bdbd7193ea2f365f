"""Step `validate`: the data quality gate between `import` and `split`.

Reads `data/prepared/dataset.json`, checks every image file in parallel, runs the GX suites, and
writes `reports/validation.json` (always, even when the gate fails), the GX Data Docs and, when the
data passes (or was cleaned in `drop` mode), `data/prepared/validated.json`.
"""

from __future__ import annotations

import time

from detops.atomic import write_json
from detops.console import out_console
from detops.dataset.canonical import dataset_root, read_dataset, write_dataset
from detops.errors import ValidationFailed
from detops.steps.result import StepResult
from detops.validation.gate import validate_dataset
from detops.validation.integrity import check_images
from detops.validation.report import build_report, failure_message, summary_table
from detops.workspace import Workspace


def _docs_switched_off(ws: Workspace) -> None:
    """The docs folder is a declared output whatever the params: without Data Docs it holds one page saying
    so, and where the results are, so `dvc repro` never misses an output."""
    import html

    from detops.atomic import atomic_dir

    report = html.escape(ws.relative(ws.output("validate", "report")))
    with atomic_dir(ws.output("validate", "docs")) as folder:
        (folder / "index.html").write_text(
            "<!doctype html><meta charset='utf-8'><title>detops validation</title>"
            "<p>Great Expectations Data Docs are switched off (<code>validate.data_docs: false</code>). "
            f"The validation results are in <code>{report}</code>.</p>\n",
            encoding="utf-8")


def run(ws: Workspace) -> StepResult:
    params = ws.params.validate_
    dataset = read_dataset(ws.dataset_json)
    started = time.perf_counter()
    integrity = check_images(dataset, dataset_root(dataset, ws.root), params.workers)
    integrity_s = round(time.perf_counter() - started, 4)
    docs = ws.output("validate", "docs") if params.data_docs else None
    outcome = validate_dataset(dataset, integrity, params, docs_dir=docs)
    if not params.data_docs:
        _docs_switched_off(ws)

    report_path = ws.output("validate", "report")
    failed = bool(outcome.errors) or (not outcome.success and params.on_error == "fail")
    report = build_report(
        outcome,
        dataset=ws.relative(ws.dataset_json),
        output=None if failed else ws.relative(ws.validated_json),
        data_docs=ws.relative(outcome.docs_index) if outcome.docs_index else None,
        extra_timings={"integrity_s": integrity_s},
    )
    write_json(report_path, report)
    out_console().print(summary_table(outcome))
    if failed:
        ws.validated_json.unlink(missing_ok=True)  # a stale pass must not feed `split`
        raise ValidationFailed(failure_message(outcome, ws.relative(report_path)))
    write_dataset(ws.validated_json, outcome.dataset)

    outputs = {"validated": ws.relative(ws.validated_json), "report": ws.relative(report_path)}
    if outcome.docs_index:
        outputs["data_docs"] = ws.relative(outcome.docs_index)
    after = outcome.counts["after"]
    return StepResult(
        step="validate",
        outputs=outputs,
        metrics={
            "passed": outcome.success,
            "images": after["images"],
            "boxes": after["boxes"],
            "classes": after["classes"],
            "dropped_images": report["counts"]["dropped"]["images"],
            "dropped_boxes": report["counts"]["dropped"]["boxes"],
            "problems": len(outcome.problems),
            "content_hash": outcome.content_hash["output"],
        },
        notes=[f"dropped {p.message()}" for p in outcome.problems[:5]],
    )
