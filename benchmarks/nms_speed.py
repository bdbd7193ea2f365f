"""Benchmark: `detops.inference.decode.batched_nms` (numpy, what ONNX / OpenVINO / TensorRT serving runs, no torch)
against torchvision's `batched_nms` (the anchor it must equal), at the candidate counts an image has after the score
threshold: sparse boxes (most kept) and dense ones (most suppressed). Median ms per call; the results are checked
equal on every case. Prints a markdown table and the CPU.

    .venv/bin/python benchmarks/nms_speed.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from serve_load import cpu_table, machine_line


def boxes_of(rng: np.random.Generator, n: int, spread: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = rng.uniform(0, spread, size=(n, 2))
    wh = rng.uniform(10, 60, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32), rng.integers(0, 3, n)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    import torch
    from torchvision.ops import batched_nms as tv_batched_nms

    from detops.inference.decode import batched_nms

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| candidates | boxes | kept | detops (numpy) ms | torchvision ms | ratio |\n|---|---|---|---|---|---|")
    for n in (20, 100, 300, 1000):
        for name, spread in (("sparse", 2000.0), ("dense", 200.0)):
            boxes, scores, labels = boxes_of(rng, n, spread)
            tensors = (torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels))
            ours = batched_nms(boxes, scores, labels, 0.6)
            np.testing.assert_array_equal(ours, tv_batched_nms(*tensors, 0.6).numpy())
            mine = median_ms(lambda b=boxes, s=scores, la=labels: batched_nms(b, s, la, 0.6), args.repeats)
            anchor = median_ms(lambda t=tensors: tv_batched_nms(*t, 0.6), args.repeats)
            print(f"| {n} | {name} | {len(ours)} | {mine:.2f} | {anchor:.2f} | {mine / anchor:.2f}x |")
    print(f"\n{cpu_table()}\n{machine_line()}")


if __name__ == "__main__":
    main()
