"""Benchmark: the demo config (params.yaml defaults) on the synthetic sample, as `make demo` trains it.

Prepares a fresh workspace (sample -> import -> validate -> split with the real steps), trains with the
`train` step, scores the test split as `evaluate` does (the same predictor and COCO evaluator).
Prints wall time, images/s and test mAP / mAP@0.5. Target on a 2-core CPU: test mAP@0.5 >= 0.6 within
3 minutes of training.

    .venv/bin/python benchmarks/train_demo.py [--workspace DIR] [--set train.epochs=20 ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def make_workspace(root: Path, overrides: list[str]) -> Any:
    from detops.config import load_params
    from detops.workspace import Workspace

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return Workspace.at(root, load_params(root / "params.yaml", overrides))


def prepare(ws: Any, with_sample: bool = True) -> dict[str, float]:
    """(sample ->) import -> validate -> split with the project's steps; returns each step's seconds."""
    from detops.steps import import_, sample, split, validate

    steps = [("sample", sample)] if with_sample else []
    steps += [("import", import_), ("validate", validate), ("split", split)]
    timings = {}
    for name, step in steps:
        started = time.perf_counter()
        step.run(ws)
        timings[name] = time.perf_counter() - started
    return timings


def test_map(ws: Any, checkpoint: Path, split: str = "test") -> dict[str, float]:
    """mAP of `checkpoint` on a split, scored by the scorer `evaluate` uses (COCO results in original pixels)."""
    from detops.evaluation.scorer import Scorer

    scorer = Scorer.of(ws, split=split)
    started = time.perf_counter()
    metrics = scorer.score(checkpoint).metrics
    seconds = time.perf_counter() - started
    return {"map": float(metrics[f"{split}/map"] or 0.0), "map_50": float(metrics[f"{split}/map_50"] or 0.0),
            "predict_seconds": seconds, "images": len(scorer.gt["images"])}


def bench_parser(doc: str, workspace: Path, keep_data: bool = True) -> argparse.ArgumentParser:
    """The options every training benchmark takes: its workspace, params overrides, reuse of prepared data."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=workspace)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    if keep_data:
        parser.add_argument("--keep-data", action="store_true", help="reuse the prepared splits in the workspace")
    return parser


def fresh_workspace(args: argparse.Namespace, overrides: list[str]) -> Any:
    """The benchmark's workspace, emptied first unless --keep-data."""
    if not getattr(args, "keep_data", False) and args.workspace.exists():
        shutil.rmtree(args.workspace)
    return make_workspace(args.workspace, [*overrides, *args.overrides])


def main() -> int:
    args = bench_parser(__doc__, Path("/tmp/detops-bench/demo")).parse_args()
    ws = fresh_workspace(args, [])
    timings: dict[str, float] = {}
    if not ws.split_json("train").is_file():
        timings.update(prepare(ws))
    report(ws, timings)
    return 0


def report(ws: Any, timings: dict[str, float]) -> None:
    """Train from scratch in `ws` (stale models/reports/MLflow removed), score the test split, print a table."""
    for stale in ("models", "reports", "mlflow.db", "mlartifacts"):
        path = ws.root / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    from detops.steps import train

    started = time.perf_counter()
    result = train.run(ws)
    timings["train"] = time.perf_counter() - started
    scores = test_map(ws, ws.checkpoint())
    summary = json.loads(ws.output("train", "metrics").read_text())
    p = ws.params.train
    print(f"\nconfig: backbone={p.backbone} image_size={p.image_size} batch={p.batch_size} epochs={p.epochs} "
          f"lr={p.lr} fpn={p.fpn_channels} head_convs={p.head_convs} strides={p.strides}")
    rows = [
        ("train step wall time (s)", f"{timings['train']:.1f}"),
        ("train loop time (s)", f"{summary['train_seconds']:.1f}"),
        ("epochs run / best", f"{summary['epochs']} / {summary['best_epoch']}"),
        ("train images/s", f"{summary['images_per_second']:.1f}"),
        ("val mAP / mAP@0.5", f"{summary['val/map']:.3f} / {summary['val/map_50']:.3f}"),
        ("test mAP / mAP@0.5", f"{scores['map']:.3f} / {scores['map_50']:.3f}"),
        ("test predict images/s", f"{scores['images'] / scores['predict_seconds']:.1f}"),
        ("parameters", str(summary["parameters"])),
        *((f"{name} step (s)", f"{seconds:.1f}") for name, seconds in timings.items() if name != "train"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps({"timings": timings, "train": summary, "test": scores, "notes": result.notes}))


if __name__ == "__main__":
    sys.exit(main())
