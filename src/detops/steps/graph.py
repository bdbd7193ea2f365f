"""The step graph, declared once: what each step reads (params sections, files) and writes.

Everything else is read or generated from here: `dvc.yaml` (`detops dvc-yaml`; a test checks the committed
file), the order of the Prefect flow, the Prefect cache key (`detops.pipeline`), the outputs a step reports
and the contract test that records which params each step really reads.

Paths are written with DVC's own `${...}` interpolation of `params.yaml`, so a changed `paths.*` or
`import.source` needs no regeneration: DVC and the Prefect tasks resolve the same templates. No output
depends on a param's value (validate always writes its docs folder, a short page when Data Docs are off),
so the generated file is the same for every params.yaml.

`paths` and `mlflow` are ambient: every step reads them (where files go, where runs are logged), and they
never change what a step computes, so they are in no step's list and no cache key.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from typing import Literal

AMBIENT = ("paths", "mlflow")

OutKind = Literal["out", "metric", "plot"]


@dataclass(frozen=True)
class Out:
    """One output: a file or folder template, how DVC treats it, and a name steps refer to it by."""

    name: str
    path: str
    kind: OutKind = "out"
    cache: bool = True  # False: git keeps it (small reports), DVC only tracks its hash
    persist: bool = False  # True: DVC must not delete it before the stage re-runs (read back next time)


@dataclass(frozen=True)
class Step:
    """One pipeline verb: its params sections (own first), data deps and outputs. Its code is what its module
    imports (`detops.codegraph`), so no module list is kept here."""

    name: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[Out, ...]
    cacheable: bool = True  # False: side effects (the registry); Prefect never serves it from cache
    dvc: bool = True  # False: not a `dvc.yaml` stage (its outputs are not versioned data, or overlap)

    @property
    def module(self) -> str:
        """`detops.steps.<verb>`, whose `run(ws)` is the step (`import_`: `import` is a Python keyword)."""
        return f"detops.steps.{self.name}_" if keyword.iskeyword(self.name) else f"detops.steps.{self.name}"


PREPARED, MODELS, REPORTS, RAW = "${paths.prepared}", "${paths.models}", "${paths.reports}", "${paths.raw}"
RUN = f"{REPORTS}/mlflow_run.json"  # train's MLflow run: evaluate logs into it, export stamps it, promote registers it

STEPS: dict[str, Step] = {s.name: s for s in (
    Step(
        "sample", ("sample",), (),
        (Out("dataset", f"{RAW}/${{sample.name}}"),),
    ),
    Step(
        "import", ("import",), ("${import.source}", "${import.batches}"),
        (Out("dataset", f"{PREPARED}/dataset.json"),),
    ),
    Step(
        "validate", ("validate",), (f"{PREPARED}/dataset.json",),
        (Out("validated", f"{PREPARED}/validated.json"),
         Out("docs", f"{REPORTS}/validation_docs", cache=False),
         Out("report", f"{REPORTS}/validation.json", "metric", cache=False)),
    ),
    Step(
        "split", ("split",), (f"{PREPARED}/validated.json",),
        (Out("train", f"{PREPARED}/train.json"), Out("val", f"{PREPARED}/val.json"),
         Out("test", f"{PREPARED}/test.json"),
         # read back on the next run so old images keep their split: DVC must not delete it
         Out("assignments", f"{PREPARED}/split_assignments.json", cache=False, persist=True),
         Out("report", f"{REPORTS}/split.json", "metric", cache=False)),
    ),
    Step(
        # evaluate: validation during training decodes with the evaluation thresholds; test: its classes must be
        # learnable from train (checked before hours of training, not after)
        "train", ("train", "evaluate"), (f"{PREPARED}/train.json", f"{PREPARED}/val.json", f"{PREPARED}/test.json"),
        (Out("best", f"{MODELS}/best.ckpt"), Out("last", f"{MODELS}/last.ckpt"),
         # the MLflow run every later step logs into or registers from: a declared output, so a retraining
         # with a new run re-runs evaluate and export even when best.ckpt comes out byte-identical
         Out("mlflow_run", f"{REPORTS}/mlflow_run.json", cache=False),
         Out("metrics", f"{REPORTS}/train.json", "metric", cache=False),
         Out("curves", f"{REPORTS}/plots/training_curves.png", "plot", cache=False)),
    ),
    Step(
        "evaluate", ("evaluate",), (f"{MODELS}/best.ckpt", f"{PREPARED}/test.json", RUN),
        (Out("detections", f"{REPORTS}/detections.json", cache=False),
         Out("metrics", f"{REPORTS}/metrics.json", "metric", cache=False),
         Out("report", f"{REPORTS}/evaluation.json", "metric", cache=False),
         Out("pr_curves", f"{REPORTS}/plots/pr_curves.png", "plot", cache=False),
         Out("confusion", f"{REPORTS}/plots/confusion.png", "plot", cache=False),
         Out("predictions", f"{REPORTS}/plots/predictions.png", "plot", cache=False),
         Out("pr_curves_data", f"{REPORTS}/plots/pr_curves.csv", "plot", cache=False),
         Out("confusion_data", f"{REPORTS}/plots/confusion.csv", "plot", cache=False)),
    ),
    Step(
        # evaluate: every variant is scored as evaluate scores; predict: the serving threshold in each file
        "export", ("export", "evaluate", "predict"),
        (f"{MODELS}/best.ckpt", f"{PREPARED}/test.json", f"{PREPARED}/train.json", RUN),
        (Out("folder", f"{MODELS}/export"),
         Out("markdown", f"{REPORTS}/export.md", cache=False),
         Out("report", f"{REPORTS}/export.json", "metric", cache=False),
         Out("plot", f"{REPORTS}/plots/export_latency.png", "plot", cache=False)),
    ),
    Step(
        # evaluate + predict: the champion is re-scored on the current test split as evaluate scores;
        # monitor: the reference feature table logged with the version is computed as monitor computes it;
        # export's folder: the accepted variants export.json names are logged with the version; the three splits
        # too (train and val checked against the run's hashes, train's image features are the monitoring reference)
        "promote", ("promote", "evaluate", "predict", "monitor"),
        (f"{MODELS}/best.ckpt", f"{REPORTS}/metrics.json", f"{REPORTS}/export.json", f"{MODELS}/export",
         f"{PREPARED}/train.json", f"{PREPARED}/val.json", f"{PREPARED}/test.json", RUN),
        (Out("decision", f"{REPORTS}/promotion.json", "metric", cache=False),
         Out("summary", f"{REPORTS}/promotion.md", cache=False)),
        cacheable=False,
    ),
    Step(
        # promote: with no monitor.reference, the reference is the table logged with the champion (its alias).
        # Not a DVC stage: it checks data delivered outside the pipeline, and its outputs nest in one folder.
        "monitor", ("monitor", "promote", "predict"), (),
        (Out("folder", f"{REPORTS}/drift", cache=False),
         Out("verdict", f"{REPORTS}/drift/verdict.json", "metric", cache=False),  # the whole run, one verdict
         Out("batches", f"{REPORTS}/drift/batches", cache=False),  # batches/<NAME>/: one folder per batch checked
         Out("current", f"{REPORTS}/drift/current", cache=False),  # the check of monitor.current
         # batch -> verdict, so each batch is checked and announced once (read back on the next run)
         Out("ledger", "${monitor.landing}/ledger.json", cache=False, persist=True),
         # <NAME>.txt per unlabelled drifted batch, written by the retraining it triggers (monitoring.accept)
         Out("labels_needed", f"{REPORTS}/drift/labels_needed", cache=False),
         # the labelling loop (detops.labeling): <NAME>/selection.json per `label select`, <NAME>/ audit of a
         # labelled batch before acceptance, <NAME>.json images sent back for review, the audit of a split
         Out("selections", f"{REPORTS}/labeling/selections", cache=False),
         Out("batch_audits", f"{REPORTS}/labeling/audits", cache=False),
         Out("review", f"{REPORTS}/labeling/review", cache=False),
         # <NAME>/label_studio.json: the batch's Label Studio project and each image's task id (`label push|pull`)
         Out("label_studio", f"{REPORTS}/labeling/label_studio", cache=False),
         Out("label_audit", f"{REPORTS}/label_audit.json", cache=False),
         Out("label_audit_page", f"{REPORTS}/label_audit.html", cache=False)),
        cacheable=False,
        dvc=False,
    ),
)}

# The retraining flow and `dvc repro`, in order (`sample` runs only when training on the embedded sample).
RETRAIN = ("import", "validate", "split", "train", "evaluate", "export", "promote")
