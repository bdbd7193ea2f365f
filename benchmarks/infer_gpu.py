"""Benchmark (GPU): inference of a detops checkpoint in torch eager FP32, eager bf16 autocast and torch.compile,
plus ONNX Runtime CUDA (FP32, FP16 files) and TensorRT engines when those are installed: batch 1 latency
(graph alone, p50/p95) and throughput at the largest batch, as one table.

Needs a CUDA GPU; prints a skip line otherwise. Point it at a workspace that `detops export` ran in (the BCCD
model of `benchmarks/train_bccd.py` by default):

    .venv/bin/python benchmarks/infer_gpu.py [--workspace /tmp/detops-bench/bccd] [--batch 32] [--runs 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def timed(fn: Callable[[], object], runs: int, sync: Callable[[], None]) -> np.ndarray:
    for _ in range(20):
        fn()
    sync()
    out = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        out[i] = time.perf_counter() - start
    return out * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/detops-bench/bccd"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: needs a CUDA GPU")
        return 0
    from detops.inference import load_predictor
    from detops.training.predict import load_detector

    checkpoint = args.workspace / "models" / "best.ckpt"
    model, meta = load_detector(checkpoint, "cuda")
    size = int(meta["image_size"])
    one = torch.rand(1, 3, size, size, device="cuda")
    many = torch.rand(args.batch, 3, size, size, device="cuda")
    sync = torch.cuda.synchronize
    rows: list[tuple[str, np.ndarray, float]] = []

    def torch_row(name: str, fn: Callable[[torch.Tensor], object]) -> None:
        with torch.inference_mode():
            lat = timed(lambda: fn(one), args.runs, sync)
            per_batch = timed(lambda: fn(many), max(10, args.runs // 10), sync)
        rows.append((name, lat, args.batch / (np.median(per_batch) / 1000)))

    torch_row("torch eager fp32", model)
    model_cl = model.to(memory_format=torch.channels_last)

    def bf16(x: torch.Tensor) -> object:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model_cl(x)

    torch_row("torch eager bf16 (autocast)", bf16)
    compiled = torch.compile(model_cl, mode="max-autotune", dynamic=False)

    def compiled_bf16(x: torch.Tensor) -> object:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return compiled(x)

    torch_row("torch.compile bf16", compiled_bf16)
    export = args.workspace / "models" / "export"
    for path in sorted(export.glob("*.onnx")) + sorted(export.glob("*.engine")):
        try:
            predictor = load_predictor(path, device="cuda")
        except Exception as exc:  # ONNX Runtime without CUDA, TensorRT absent or built elsewhere: say so
            print(f"{path.name}: not run ({str(exc).splitlines()[0][:160]})")
            continue
        if "CUDA" not in predictor.runtime_name and predictor.kind != "tensorrt":
            print(f"{path.name}: not run (ONNX Runtime has no CUDA provider here)")
            continue
        x1, xb = one.cpu().numpy(), many.cpu().numpy()
        lat = timed(lambda p=predictor, x=x1: p.runtime(x), args.runs, sync)  # type: ignore[misc]
        per_batch = timed(lambda p=predictor, x=xb: p.runtime(x), max(10, args.runs // 10), sync)  # type: ignore[misc]
        rows.append((f"{path.name} ({predictor.runtime_name})", lat, args.batch / (np.median(per_batch) / 1000)))
    print(f"\n{torch.cuda.get_device_name(0)}, {size} px, graph only\n")
    print(f"| runtime | p50 ms @1 | p95 ms @1 | img/s @{args.batch} |\n|---|---|---|---|")
    for name, lat, ips in rows:
        print(f"| {name} | {np.percentile(lat, 50):.2f} | {np.percentile(lat, 95):.2f} | {ips:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
