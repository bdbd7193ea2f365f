"""Benchmark: how the pipeline grows from 10k to 100k images, in time and peak memory.

For each size N, in a fresh workspace: the sample at N small images (`--image-size`, default 64 px, so 100k
images stay within a few GB), then import, validate, split, a fixed number of training steps (`--train-steps`;
the epoch time is projected from the steps' pace), evaluate on the test split, and the drift features of the train
split. Each step runs in its own subprocess, which reports its wall time and peak RSS (`ru_maxrss` of itself and of
any process it started). Then the DVC side on the N image files: `dvc add`, `dvc status`, `dvc push` to a local
remote. Prints one table per size, the growth exponent of every step (slope of log time / log peak RSS over
log N, least squares over the sizes), the machine and its CPU flags.

    .venv/bin/python benchmarks/scale.py [--sizes 10000 30000 100000] [--image-size 64] [--train-steps 50]
        [--set train.cache_images=disk ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import machine_line  # the machine and its CPU flags, printed as the other benchmarks do

REPO = Path(__file__).resolve().parents[1]
DATA_STEPS = ("sample", "import", "validate", "split")
MODEL_STEPS = ("train", "evaluate", "drift features")
DVC_STEPS = ("dvc add", "dvc status", "dvc push")
# Small and quick: the point is how the pipeline grows, not the model.
BASE = ["train.image_size=64", "train.batch_size=16", "train.num_workers=0", "train.epochs=1", "train.patience=0",
        "evaluate.batch_size=64", "validate.data_docs=false", "sample.workers=0"]


# ------------------------------------------------------------------------------------------- one step (child side)
def peak_rss_mb() -> float:
    """Peak RSS of this process and of the largest child it waited for, in MB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def run_step(step: str, workspace: Path, overrides: list[str], train_steps: int) -> dict[str, Any]:
    """Run one step in this (fresh) process; its wall time includes importing what the step needs."""
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if step in DVC_STEPS:
        command = {"dvc add": ["dvc", "add", "data/raw/sample"], "dvc status": ["dvc", "status"],
                   "dvc push": ["dvc", "push"]}[step]
        dvc = [str(REPO / ".venv" / "bin" / command[0]), *command[1:]]
        subprocess.run(dvc, cwd=workspace, check=True, stdout=subprocess.DEVNULL)
    else:
        from detops.config import load_params
        from detops.workspace import Workspace

        ws = Workspace.at(workspace, load_params(workspace / "params.yaml", overrides))
        if step == "train":
            extra = _train(ws, train_steps)
        elif step == "drift features":
            from detops.dataset.canonical import read_dataset
            from detops.monitoring.reference import reference_features

            extra = {"rows": len(reference_features(ws, read_dataset(ws.split_json("train"))))}
        else:
            import importlib

            importlib.import_module(f"detops.steps.{'import_' if step == 'import' else step}").run(ws)
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), **extra}


def _train(ws: Any, steps: int) -> dict[str, Any]:
    """The train step, stopped after `steps` batches (it then validates once, as on early stopping)."""
    import pytorch_lightning as pl

    from detops.steps import train

    class StopAfterSteps(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
            self.times.append(time.perf_counter())
            if len(self.times) >= steps:
                trainer.should_stop = True

        def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
            self.batches = trainer.num_training_batches
            self.fit_started = time.perf_counter()

    pace = StopAfterSteps()
    started = time.perf_counter()
    train.run(ws, callbacks=[pace])
    # The first batch pays for warm-up; the pace is that of the others.
    per_step = (pace.times[-1] - pace.times[0]) / max(1, len(pace.times) - 1)
    return {"setup_s": pace.fit_started - started, "step_s": per_step, "steps": len(pace.times),
            "epoch_projected_s": per_step * pace.batches, "batches_per_epoch": pace.batches}


# ---------------------------------------------------------------------------------------------- driver (parent)
def child(step: str, workspace: Path, overrides: list[str], train_steps: int) -> dict[str, Any]:
    out = workspace / ".scale-step.json"
    command = [sys.executable, __file__, "--child-step", step, "--child-workspace", str(workspace),
               "--train-steps", str(train_steps), "--child-out", str(out), "--set", *overrides]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return result


def one_size(n: int, root: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    workspace = root / f"n{n}"
    workspace.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", workspace / "params.yaml")
    overrides = [*BASE, f"sample.num_images={n}", f"sample.image_size={args.image_size}",
                 f"sample.max_object_size={args.image_size // 2}", f"sample.typical_object_size={args.image_size // 5}",
                 *args.set]
    results: dict[str, dict[str, Any]] = {}
    for step in (*DATA_STEPS, *MODEL_STEPS):
        results[step] = child(step, workspace, overrides, args.train_steps)
        print(f"  n={n} {step}: {results[step]['seconds']:.1f} s, {results[step]['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    env_dvc = [str(REPO / ".venv" / "bin" / "dvc")]
    subprocess.run([*env_dvc, "init", "--no-scm", "-q"], cwd=workspace, check=True)
    subprocess.run([*env_dvc, "remote", "add", "-d", "local", str(root / f"remote-{n}")], cwd=workspace, check=True)
    for step in DVC_STEPS:
        results[step] = child(step, workspace, overrides, args.train_steps)
        print(f"  n={n} {step}: {results[step]['seconds']:.1f} s", file=sys.stderr, flush=True)
    results["disk"] = {"workspace_mb": _du(workspace) / 2**20, "remote_mb": _du(root / f"remote-{n}") / 2**20}
    if not args.keep:
        shutil.rmtree(workspace)
        shutil.rmtree(root / f"remote-{n}", ignore_errors=True)
    return results


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def slope(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) over log(size): 1 = linear growth."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(v, 1e-9)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def report(sizes: list[int], runs: dict[int, dict[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    steps = (*DATA_STEPS, *MODEL_STEPS, *DVC_STEPS)
    print(f"\nsample at {', '.join(f'{n:,}' for n in sizes)} images of {args.image_size} px; "
          f"{args.train_steps} training steps (batch 16, 64 px); overrides: {' '.join(args.set) or 'none'}\n")
    header = " | ".join(f"{n:,}: s / peak MB" for n in sizes)
    growth = " | time exponent | RSS exponent" if len(sizes) > 1 else ""
    print(f"| step | {header}{growth} |")
    print("|---|" + "---:|" * (len(sizes) + (2 if len(sizes) > 1 else 0)))
    for step in steps:
        cells = " | ".join(f"{runs[n][step]['seconds']:.1f} / {runs[n][step]['peak_rss_mb']:.0f}" for n in sizes)
        exps = ""
        if len(sizes) > 1:
            exps = (f" | {slope(sizes, [runs[n][step]['seconds'] for n in sizes]):.2f}"
                    f" | {slope(sizes, [runs[n][step]['peak_rss_mb'] for n in sizes]):.2f}")
        print(f"| {step} | {cells}{exps} |")
    print("\n| size | train setup (s) | s / step | batches / epoch | projected epoch (s) | workspace MB | remote MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        t, d = runs[n]["train"], runs[n]["disk"]
        print(f"| {n:,} | {t['setup_s']:.1f} | {t['step_s']:.3f} | {t['batches_per_epoch']} | "
              f"{t['epoch_projected_s']:.0f} | {d['workspace_mb']:.0f} | {d['remote_mb']:.0f} |")
    print(f"\n{machine_line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--set", nargs="*", default=[], help="params overrides, e.g. train.cache_images=disk")
    parser.add_argument("--keep", type=Path, help="keep the workspaces in this folder (default: a temporary one)")
    parser.add_argument("--child-step", help=argparse.SUPPRESS)
    parser.add_argument("--child-workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_step:
        result = run_step(args.child_step, args.child_workspace, args.set, args.train_steps)
        args.child_out.write_text(json.dumps(result))
        return
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sizes = sorted(args.sizes)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep
        runs = {n: one_size(n, root, args) for n in sizes}
    else:
        with tempfile.TemporaryDirectory(prefix="detops-scale-") as tmp:
            runs = {n: one_size(n, Path(tmp), args) for n in sizes}
    report(sizes, runs, args)


if __name__ == "__main__":
    main()
