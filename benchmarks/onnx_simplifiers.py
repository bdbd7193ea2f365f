"""Benchmark: onnxslim vs onnxsim on the detops graph (random weights): nodes, simplify time, ORT latency.

Why detops depends on onnxslim. onnxsim is optional here (`pip install onnxsim`); without it only onnxslim
is measured.

    .venv/bin/python benchmarks/onnx_simplifiers.py [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = [("regnetx_002", 192), ("mobilenetv2_100", 416)]


def latency_ms(path: Path, size: int, threads: int, runs: int = 40) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(5):
        session.run(None, {"images": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"images": x})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def main() -> int:
    import onnx
    import torch

    from detops.config.train import TrainParams
    from detops.model.detector import Detector, DetectorConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    simplifiers: dict[str, object] = {}
    import onnxslim

    simplifiers["onnxslim"] = lambda m: onnxslim.slim(m)
    try:
        import onnxsim

        simplifiers["onnxsim"] = lambda m: onnxsim.simplify(m)[0]
    except ImportError:
        print("onnxsim not installed: measuring onnxslim only", file=sys.stderr)
    print(f"| model | simplifier | nodes | simplify s | ORT p50 ms ({args.threads} threads) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for backbone, size in CONFIGS:
            torch.manual_seed(0)
            model = Detector(DetectorConfig.from_params(TrainParams(), 4, backbone=backbone, image_size=size)).eval()
            raw = Path(tmp) / f"{backbone}.onnx"
            torch.onnx.export(model, (torch.rand(1, 3, size, size),), str(raw), input_names=["images"],
                              output_names=["raw"], opset_version=17, dynamo=False,
                              dynamic_axes={"images": {0: "batch"}, "raw": {0: "batch"}})
            base = onnx.load(str(raw))
            rows = [("none", base, 0.0)]
            for name, simplify in simplifiers.items():
                start = time.perf_counter()
                out = simplify(onnx.load(str(raw)))  # type: ignore[operator]
                rows.append((name, out, time.perf_counter() - start))
            for name, graph, seconds in rows:
                path = Path(tmp) / f"{backbone}.{name}.onnx"
                onnx.save(graph, str(path))
                print(f"| {backbone} {size}px | {name} | {len(graph.graph.node)} | {seconds:.2f} | "
                      f"{latency_ms(path, size, args.threads):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
