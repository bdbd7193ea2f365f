"""Benchmark: the promote step's own wall time on the demo model (params.yaml defaults: regnetx_002, 192 px, the
400-image sample, so a 40-image test split), with the champion re-scored on that split.

Prepares a fresh workspace with the real steps (sample -> import -> validate -> split -> train -> evaluate ->
export, none of them timed) and its own local MLflow store, then times three promotions:
1. the first training run: registers version 1 (pyfunc model: checkpoint, ONNX variants, code), no champion;
2. a second training run (same weights, re-exported under its run id): registers version 2, downloads and
   re-scores champion version 1 on the test split, and rejects the equal candidate;
3. the second run again: nothing to register, the champion is re-scored again.
Train epochs do not change what promote does (same architecture, files and test split), so the default trains
2 epochs; `--set train.epochs=22` is the demo model exactly.

    .venv/bin/python benchmarks/promote_speed.py [--workspace DIR] [--keep-data] [--set key=value ...]
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from train_demo import bench_parser, fresh_workspace, prepare

FAST = ["train.epochs=2", "export.latency_runs=3", "export.warmup_runs=1"]


def timing(func: Callable[..., Any], seconds: list[float]) -> Callable[..., Any]:
    """`func`, adding the wall time of each call to `seconds`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    return wrapper


def new_run(ws: Any) -> None:
    """A second training run of the same weights, as `train` records one; export re-stamps the files with it."""
    from mlflow import MlflowClient

    from detops import tracking

    experiment = tracking.configure(ws)
    run = MlflowClient(tracking.tracking_uri(ws)).create_run(experiment, tags=tracking.provenance(ws))
    tracking.run_record(ws).write_text(json.dumps({"run_id": run.info.run_id}), encoding="utf-8")


def main() -> int:
    args = bench_parser(__doc__, Path("/tmp/detops-bench/promote")).parse_args()
    ws = fresh_workspace(args, FAST)
    if not ws.split_json("train").is_file():
        prepare(ws)
    for stale in ("models", "reports", "mlflow.db", "mlartifacts", ".detops"):
        path = ws.root / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    from detops.registry import rescore, versions
    from detops.steps import evaluate, export, promote, train

    for step in (train, evaluate, export):
        step.run(ws)
    register: list[float] = []
    rescoring: list[float] = []
    versions.register_run = timing(versions.register_run, register)
    build_scorer = rescore.champion_scorer  # the scorer it builds downloads and predicts: time that
    rescore.champion_scorer = lambda *a: timing(build_scorer(*a), rescoring)

    def second_run() -> None:
        new_run(ws)
        export.run(ws)

    rows: list[tuple[str, ...]] = []

    def measure(label: str, prepare_run: Callable[[], None] | None = None) -> None:
        if prepare_run:
            prepare_run()
        register.clear()
        rescoring.clear()
        started = time.perf_counter()
        result = promote.run(ws)
        wall = time.perf_counter() - started
        report = json.loads((ws.reports / "promotion.json").read_text(encoding="utf-8"))
        reg, score = sum(register), sum(rescoring)
        rows.append((label, f"v{report['version']} {'new' if report['registered'] else 'existing'}",
                     str(result.metrics["decision"]), f"{wall:.2f}", f"{reg:.2f}", f"{score:.2f}",
                     f"{wall - reg - score:.2f}"))

    measure("1. first training run (no champion)")
    measure("2. second training run (vs champion v1)", second_run)
    measure("3. second run again (nothing to register)")

    test_images = len(json.loads(ws.split_json("test").read_text(encoding="utf-8"))["images"])
    size = sum(p.stat().st_size for p in (ws.models / "export").iterdir()) + (ws.models / "best.ckpt").stat().st_size
    p = ws.params.train
    print(f"\npromote step on {p.backbone} @ {p.image_size} px, {test_images} test images, model files "
          f"{size / 2**20:.1f} MB (checkpoint + exports), local SQLite store\n")
    header = ("promotion", "version", "decision", "step wall (s)", "register (s)", "re-score champion (s)",
              "rest (s)")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
