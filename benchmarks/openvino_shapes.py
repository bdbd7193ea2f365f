"""Benchmark: OpenVINO with a static model per batch size (what `detops.inference` runs) vs one model with a dynamic
batch axis, on exported `*.openvino.onnx` files: ms per image at batch 1, at batch 8 and over a mix of sizes 2-8
(as serving's batches come), and the compile time of one static size. Rounds interleave the two, medians reported.

    .venv/bin/python benchmarks/openvino_shapes.py models/export/model.bf16.openvino.onnx [more files]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

MIXED = (2, 5, 3, 8, 4, 6, 7)
CASES = {"batch 1": ((1,), 40), "batch 8": ((8,), 8), "mixed 2-8": (MIXED, 3)}  # sizes, repetitions per round


def ms_per_image(run: Callable[[np.ndarray], object], inputs: dict[int, np.ndarray], sizes: Sequence[int],
                 repeats: int) -> float:
    started, images = time.perf_counter(), 0
    for _ in range(repeats):
        for n in sizes:
            run(inputs[n])
            images += n
    return (time.perf_counter() - started) / images * 1000


def measure(path: Path, threads: int, rounds: int) -> list[str]:
    from detops.inference.openvino_runtime import OpenVinoRuntime

    static = OpenVinoRuntime(path, threads)
    size = static.meta.image_size
    dynamic_request = static._compile(None).create_infer_request()  # the dynamic axis alone

    def dynamic(batch: np.ndarray) -> object:
        dynamic_request.infer({0: batch})
        return dynamic_request.get_output_tensor(0).data

    inputs = {n: np.random.default_rng(n).random((n, 3, size, size), dtype=np.float32) for n in range(1, 9)}
    started = time.perf_counter()
    static(inputs[8])
    compile_s = time.perf_counter() - started  # includes one batch-8 run
    for n in range(1, 9):  # compile every static size and warm both
        static(inputs[n]), dynamic(inputs[n])
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, run in (("static", static), ("dynamic", dynamic)):
            for case, (sizes, repeats) in CASES.items():
                times.setdefault((name, case), []).append(ms_per_image(run, inputs, sizes, repeats))
    rows = []
    for case in CASES:
        s, d = statistics.median(times[("static", case)]), statistics.median(times[("dynamic", case)])
        rows.append(f"| {path.name} ({size} px, {static.hint}) | {case} | {s:.2f} | {d:.2f} | {d / s:.2f}x |")
    rows.append(f"| {path.name} | compile one static size (+ one batch-8 run) | {compile_s:.2f} s | | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=0, help="OpenVINO threads (0: one per core)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from detops.export.report import cpu_info, machine

    print(f"{machine()}; CPU flags: {' '.join(cpu_info(())['flags'])}\n")
    print("| file | batches | static ms/img | dynamic ms/img | static speed-up |\n|---|---|---|---|---|")
    for path in args.files:
        print("\n".join(measure(path, args.threads, args.rounds)))


if __name__ == "__main__":
    main()
