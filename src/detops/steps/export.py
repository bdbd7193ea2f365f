"""Step `export`: the best checkpoint as deployable files, each scored like `evaluate` scores the checkpoint.

ONNX FP32 (the reference export), FP16 (the GPU file), INT8 QDQ for ONNX Runtime on CPU and a symmetric
INT8 QDQ file for TensorRT, OpenVINO variants of the FP32 and INT8 files where openvino is installed, and
TensorRT engines where a GPU and TensorRT exist. Every file, the checkpoint first, is scored by the one scorer
(`detops.evaluation.scorer`) on the `evaluate` split; a variant more than `export.max_map_drop` below the
checkpoint is rejected, and so is an OpenVINO file OpenVINO cannot load (the other variants still ship). Every
variant is timed in one process of its own, where the OpenVINO files are scored too (`detops.export.timing`: this
process never loads OpenVINO, `detops.isolated`). Files
are written to a temporary folder that replaces `models/export/` only when everything succeeded, so a failure
leaves nothing half-written.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.dataset.canonical import Dataset, read_dataset
from detops.errors import DataError, ExportError
from detops.steps.result import StepResult
from detops.workspace import Workspace

if TYPE_CHECKING:
    from detops.evaluation.scorer import Scorer
    from detops.export.gate import Variant
    from detops.export.openvino import OpenVinoPlan
    from detops.export.variants import VariantFile
    from detops.inference.predictor import Predictor

TIMING_IMAGES = 8  # distinct test images cycled through the latency runs


def calibration_files(ws: Workspace, wanted: int) -> tuple[list[Path], list[str]]:
    """`wanted` train images spread evenly over the split (deterministic); fewer there: all, with a note."""
    from detops.inference.dataset import dataset_images

    path = ws.split_json("train")
    if not path.is_file():
        raise DataError(f"{path}: the train split is missing; INT8 calibration needs it. Run `detops split`.")
    images = [p for _, p in dataset_images(read_dataset(path), ws.root)]
    if not images:
        raise DataError(f"{path}: the train split has no images; INT8 calibration needs some.")
    if len(images) < wanted:
        return images, [f"INT8 calibrated on all {len(images)} train images, fewer than "
                        f"export.calibration_images={wanted}"]
    step = len(images) / wanted
    return [images[int(i * step)] for i in range(wanted)], []


def tensorrt_plan(ws: Workspace) -> tuple[bool, str | None]:
    """(build engines?, why not): `auto` skips with a reason, `true` makes the absence an error."""
    setting = ws.params.export.tensorrt
    if setting is False:
        return False, None
    from detops.export.tensorrt import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return True, None
    if setting is True:
        raise ExportError(f"export.tensorrt is true but {reason}. Set export.tensorrt=auto to skip engines here.")
    return False, f"TensorRT engines skipped: {reason}"


def run(ws: Workspace) -> StepResult:
    from detops.evaluation.scorer import Scorer
    from detops.export.openvino import plan

    scorer = Scorer.of(ws)
    checkpoint = ws.checkpoint()
    build_engines, skipped = tensorrt_plan(ws)
    openvino = plan(ws.params.export.openvino, ws.params.export.int8)
    calibration, notes = calibration_files(ws, ws.params.export.calibration_images)
    notes += [skipped] if skipped else []
    notes += openvino.notes
    variants, deploy, context = _export(ws, checkpoint, scorer, calibration, build_engines, openvino, notes)

    metric = context["metric"]
    metrics: dict[str, Any] = {"deployable cpu": str(deploy.get("cpu")), "deployable gpu": str(deploy.get("gpu"))}
    rows = {v.name: v for v in variants}
    cpu, fp32 = rows.get(str(deploy.get("cpu"))), rows["onnx-fp32"]
    if cpu is not None and cpu.latency is not None and fp32.latency is not None:  # the headline: what serving gains
        metrics["cpu x onnx-fp32"] = round(cpu.latency["throughput_ips"] / fp32.latency["throughput_ips"], 2)
    for variant in variants:
        metrics[f"{variant.name} {metric}"] = variant.metrics.get(metric)
    return StepResult(step="export", outputs={k: ws.relative(p) for k, p in ws.outputs("export").items()},
                      metrics=metrics, notes=notes)


def _export(ws: Workspace, checkpoint: Path, scorer: Scorer, calibration: list[Path], build_engines: bool,
            openvino: OpenVinoPlan, notes: list[str]) -> tuple[list[Any], dict[str, str | None], dict[str, Any]]:
    """Write, score, time and gate every variant; reports and the MLflow log only once all succeeded."""
    from detops.atomic import atomic_dir
    from detops.console import out_console
    from detops.evaluation.mlflow_log import log_evaluation
    from detops.export.gate import apply_gate, deployable, ranking
    from detops.export.openvino import write_openvino_variants
    from detops.export.report import cpu_info, machine, rich_table, write_reports
    from detops.export.timing import measure_in_child
    from detops.export.variants import write_engines, write_onnx_variants
    from detops.inference.meta import detops_version
    from detops.inference.predictor import load_image
    from detops.isolated import needs_isolation
    from detops.tracking import read_run_id

    params = ws.params.export
    metric = f"{scorer.split}/map"
    threads = params.threads or os.cpu_count() or 1
    baseline = scorer.load(checkpoint, threads=threads)
    meta = replace(baseline.meta, evaluation=scorer.thresholds,
                   deploy_score_threshold=ws.params.predict.score_threshold, detops_version=detops_version(),
                   run_id=read_run_id(ws))
    timing_files = _test_files(ws, scorer.gt)[:TIMING_IMAGES]
    calibration_batches = [baseline.preprocess([load_image(p)])[0] for p in calibration]
    files = ws.outputs("export")

    def score(name: str, path: Path, precision: str, target: str) -> Variant:
        predictor = baseline if path == checkpoint else scorer.load(path, threads=threads)
        label = ws.relative(files["folder"] / path.name) if path != checkpoint else ws.relative(checkpoint)
        measured = scorer.score(predictor, who=label, label=f"score {name}")
        return _variant(name, predictor, measured.metrics, precision, target, label)

    reference = score("torch", checkpoint, "fp32", "cpu")
    with atomic_dir(files["folder"]) as folder:
        # A CPU copy: ONNX export traces on the CPU, while the baseline stays on its device for the latency table.
        model = copy.deepcopy(baseline.runtime.model).cpu()  # type: ignore[attr-defined]
        exported = write_onnx_variants(model, meta, folder, params, calibration_batches)
        exported += write_openvino_variants(openvino.variants, folder)
        if build_engines:
            from detops.inference.tensorrt import current_target

            slug = current_target().slug()
            cache = {slug: ws.root / ".cache" / "tensorrt" / f"{slug}.timing-cache"}  # outside DVC's outputs
            exported += write_engines(exported, meta, folder, params.batch_sizes, cache)
        isolated = {f.name: f for f in exported if needs_isolation(f.path)}
        scored = [score(f.name, f.path, f.precision, f.target) for f in exported if f.name not in isolated]
        measured = measure_in_child(ws, {"torch": checkpoint, **{f.name: f.path for f in exported}},
                                    {n: ws.relative(files["folder"] / f.path.name) for n, f in isolated.items()},
                                    timing_files, meta.deployment(), max(params.batch_sizes), params.latency_runs,
                                    params.warmup_runs, threads)
        if all(o.error is not None for o in measured.values()):
            notes.append(f"no variant timed: {measured['torch'].error}")
        unloadable = []
        for name, f in isolated.items():
            label, outcome = ws.relative(files["folder"] / f.path.name), measured[name]
            if outcome.error is not None:
                unloadable.append(_unloadable(label, f, outcome.error))
                notes.append(f"{name} rejected: OpenVINO cannot load {label} (reason in the report)")
            else:
                scored.append(_row(name, f.path, outcome.runtime, False, outcome.extra, outcome.metrics,
                                   f.precision, f.target, label))
        variants = apply_gate(reference, scored, metric, params.max_map_drop) + unloadable
        fp32 = next(v for v in variants if v.name == "onnx-fp32")
        if not fp32.accepted:
            raise ExportError(f"the FP32 ONNX export is broken: {fp32.reason}. Nothing was written.")
        timings = {name: o.latency for name, o in measured.items() if o.latency is not None}
        variants = [replace(v, latency=timings[v.name]) if v.name in timings else v for v in variants]
    deploy = deployable(variants)
    served = max(params.batch_sizes)
    context = {"machine": machine(), "cpu": cpu_info(openvino.capabilities), "threads": threads, "metric": metric,
               "max_map_drop": params.max_map_drop, "baseline": "torch", "checkpoint": ws.relative(checkpoint),
               "ranked_by": f"ms per image at batch {served} (the largest of export.batch_sizes), then batch-1 p50",
               "ranking": {target: ranking(variants, target) for target in ("cpu", "gpu")}, "notes": notes}
    write_reports(variants, deploy, context, files)
    logged = log_evaluation(ws, _mlflow_metrics(variants, metric), {"export": [files["report"], files["markdown"]],
                                                                    "plots": [files["plot"]]})
    notes.append(logged.note)
    out_console().print(rich_table(variants, metric, f"detops export: {context['machine']}, {threads} threads"))
    return variants, deploy, context


def _variant(name: str, predictor: Predictor, metrics: dict[str, float | None], precision: str, target: str,
             file_label: str) -> Variant:
    """One row of the export table for a predictor loaded here, its speed measured later."""
    from detops.inference.openvino_runtime import variant_settings

    on_gpu = predictor.kind == "tensorrt" or "cuda" in predictor.runtime_name.lower()
    return _row(name, predictor.path, predictor.runtime_name, on_gpu,
                variant_settings(predictor.meta.extra), metrics, precision, target, file_label)


def _row(name: str, path: Path, runtime: str, on_gpu: bool, extra: dict[str, Any],
         metrics: dict[str, float | None], precision: str, target: str, file_label: str) -> Variant:
    """One row of the export table (per-class APs left to `evaluate`)."""
    from detops.export.gate import Variant
    from detops.inference.tensorrt import sidecar_path

    size = sum(p.stat().st_size for p in (path, sidecar_path(path)) if p.is_file())
    return Variant(name=name, file=file_label, precision=precision, runtime=runtime, target=target,
                   size_mb=round(size / 2**20, 3), metrics={k: v for k, v in metrics.items() if "/ap/" not in k},
                   latency=None, timed_on="gpu" if on_gpu else "cpu", extra=extra)


def _unloadable(file_label: str, f: VariantFile, error: str) -> Variant:
    """The row of a variant whose file its runtime rejected: unscored, untimed, not accepted, the error said (naming
    the file where it ends up, not the temporary folder it was written to)."""
    from detops.export.gate import Variant

    return Variant(name=f.name, file=file_label, precision=f.precision, runtime="-", target=f.target,
                   size_mb=round(f.path.stat().st_size / 2**20, 3) if f.path.is_file() else 0.0, metrics={},
                   latency=None, accepted=False, reason=error.replace(str(f.path), file_label))


def _test_files(ws: Workspace, gt: Dataset) -> list[Path]:
    from detops.inference.dataset import dataset_images

    return [p for _, p in dataset_images(gt, ws.root)]


def _mlflow_metrics(variants: list[Any], metric: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for v in variants:
        out[f"export/{v.name}/map"] = v.metrics.get(metric)
        out[f"export/{v.name}/map_50"] = v.metrics.get(metric.replace("/map", "/map_50"))
        if v.latency is not None:
            out[f"export/{v.name}/e2e_p50_ms"] = float(v.latency["e2e_p50_ms"])
            out[f"export/{v.name}/graph_p50_ms"] = float(v.latency["graph_p50_ms"])
    return out
