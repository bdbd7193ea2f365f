"""Benchmark: what `detops export` buys on this CPU, as ratios measured in one run.

Part 1 (needs `benchmarks/train_bccd.py` run first, i.e. ../shared): runs the export step on the BCCD model
(mobilenetv2_100, 416 px) and prints its table plus the ratios the export issue targets: INT8 vs FP32 ONNX
Runtime and FP32 ONNX Runtime vs torch eager, at batch 1, graph and end to end.
Part 2: where the INT8 time goes (ONNX Runtime profiling, by op type and by conv kind).
Part 3 (--backbones): random-weight detectors at 416 px, FP32 vs INT8 graph latency per backbone, to show
which backbones INT8 pays on (depthwise convolutions barely speed up in ONNX Runtime's int8 kernels).
Part 4 (--recipes): other quantization recipes for the BCCD model (depthwise convs left float, Conv only,
per-tensor weights, uint8 weights) against detops' own, each with its speed-up and test mAP drop.
Part 5 (--runtimes FOLDER): the graph latency of ONNX Runtime and OpenVINO on an export folder's FP32 and INT8
files at batch 1 and 8, interleaved, as speed-ups over ONNX Runtime FP32 (any exported model: the demo's too).

    .venv/bin/python benchmarks/export_speed.py [--workspace /tmp/detops-bench/bccd] [--backbones] [--recipes]
        [--runtimes models/export]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BACKBONES = ("mobilenetv2_100", "regnetx_002", "resnet18", "efficientnet_lite0")


def bccd_export(workspace: Path, threads: int, runs: int) -> None:
    from detops.config import load_params
    from detops.steps import export
    from detops.workspace import Workspace

    if not (workspace / "models" / "best.ckpt").is_file():
        print(f"skipped: no {workspace}/models/best.ckpt (run benchmarks/train_bccd.py first)")
        return
    ws = Workspace.at(workspace, load_params(workspace / "params.yaml", [
        f"export.threads={threads}", f"export.latency_runs={runs}", "export.warmup_runs=10"]))
    started = time.perf_counter()
    export.run(ws)
    seconds = time.perf_counter() - started
    report = json.loads((ws.reports / "export.json").read_text(encoding="utf-8"))
    rows = report["variants"]
    print(f"\nexport step: {seconds:.1f} s wall on {report['machine']}\n")
    print((ws.reports / "export.md").read_text(encoding="utf-8"))

    def ratio(a: str, b: str, key: str) -> str:
        return f"{float(rows[a]['latency'][key]) / float(rows[b]['latency'][key]):.2f}x"

    print("| ratio | graph p50 | end to end p50 |\n|---|---|---|")
    print(f"| INT8 ORT vs FP32 ORT (speed-up) | {ratio('onnx-fp32', 'onnx-int8', 'graph_p50_ms')} | "
          f"{ratio('onnx-fp32', 'onnx-int8', 'e2e_p50_ms')} |")
    print(f"| FP32 ORT vs torch eager (speed-up) | {ratio('torch', 'onnx-fp32', 'graph_p50_ms')} | "
          f"{ratio('torch', 'onnx-fp32', 'e2e_p50_ms')} |")
    deployed = report["deployable"]["cpu"]
    print(f"| deployable CPU ({deployed}) vs FP32 ORT (speed-up) | {ratio('onnx-fp32', deployed, 'graph_p50_ms')} | "
          f"{ratio('onnx-fp32', deployed, 'e2e_p50_ms')} |")
    batch = rows[deployed]["latency"]["throughput_batch"]
    print(f"| deployable CPU vs FP32 ORT, images/s at batch {batch} | - | "
          f"{rows[deployed]['latency']['throughput_ips'] / rows['onnx-fp32']['latency']['throughput_ips']:.2f}x |")
    print(f"\nCPU: {report.get('cpu')}; ranked by {report.get('ranked_by')}: {report.get('ranking', {}).get('cpu')}")
    drop = rows["onnx-int8"]["drop"]
    print(f"\nINT8 mAP drop vs the checkpoint: {drop:+.4f} (target <= 0.01)")
    from detops.inference import load_predictor

    int8 = ws.models / "export" / "model.int8.onnx"
    profile(int8, ws.models / "export" / "model.onnx", load_predictor(int8).meta.image_size, threads)


def profile(int8: Path, fp32: Path, size: int, threads: int, runs: int = 20) -> None:
    """Per op type, and per conv kind (depthwise or not; backbone, neck, head), ms per run."""
    import onnxruntime as ort

    print(f"\n| where the time goes ({threads} threads, {size} px) | FP32 ms | INT8 ms |\n|---|---|---|")
    tables = []
    for path in (fp32, int8):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "detops-ort-profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {"images": x})
        profile_file = Path(session.end_profiling())
        events = json.loads(profile_file.read_text(encoding="utf-8"))
        profile_file.unlink()
        table: collections.Counter[str] = collections.Counter()
        for event in events:
            if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
                continue
            op, name = event["args"]["op_name"], event["name"]
            if "Conv" in op:
                part = "head" if name.startswith("/head") else ("neck" if name.startswith("/neck") else "backbone")
                kind = "depthwise" if ("conv_dw" in name or "/bn2/" in name) else "dense"
                table[f"conv: {part} {kind}"] += event["dur"]
            else:
                table[op] += event["dur"]
        tables.append(table)
    keys = sorted(set(tables[0]) | set(tables[1]), key=lambda k: -(tables[0][k] + tables[1][k]))
    for key in keys[:14]:
        print(f"| {key} | {tables[0][key] / runs / 1000:.2f} | {tables[1][key] / runs / 1000:.2f} |")


def interleaved_p50_ms(models: list[Path], x: np.ndarray, threads: int, runs: int) -> list[float]:
    """Median graph latency of each model, timed in interleaved rounds so that noise hits every model alike."""
    import onnxruntime as ort

    sessions = []
    for path in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(3):
        for i, session in enumerate(sessions):
            for _ in range(5):
                session.run(None, {"images": x})
            for _ in range(runs // 3):
                start = time.perf_counter()
                session.run(None, {"images": x})
                times[i].append(time.perf_counter() - start)
    return [float(np.median(t) * 1000) for t in times]


def backbones(threads: int, size: int = 416, runs: int = 30) -> None:
    import torch

    from detops.config.train import TrainParams
    from detops.export.graph import export_fp32
    from detops.export.int8 import int8_source, quantize_int8
    from detops.inference.decode import Thresholds
    from detops.inference.meta import ModelMeta
    from detops.model.detector import Detector, DetectorConfig

    rng = np.random.default_rng(0)
    calibration = [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(8)]
    x = calibration[0]
    print(f"\n| backbone (random weights, {size} px, {threads} threads) | FP32 ORT ms | INT8 ORT ms | speed-up |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in BACKBONES:
            torch.manual_seed(0)
            model = Detector(DetectorConfig.from_params(TrainParams(), 3, backbone=name, image_size=size)).eval()
            meta = ModelMeta([1, 2, 3], ["a", "b", "c"], size, 114, Thresholds(0.001, 0.6, 100, 1000), 0.3)
            fp32, int8 = Path(tmp) / f"{name}.onnx", Path(tmp) / f"{name}.int8.onnx"
            export_fp32(model, fp32, size, 17, meta)
            with int8_source(fp32, Path(tmp)) as source:
                quantize_int8(source, int8, calibration, "minmax", "cpu", meta)
            a, b = interleaved_p50_ms([fp32, int8], x, threads, runs)
            print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")


def recipes(workspace: Path, threads: int, runs: int = 30) -> None:
    """detops' INT8 recipe next to the alternatives one might try to close the gap, on the BCCD model."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from detops.config import load_params
    from detops.evaluation.scorer import Scorer
    from detops.export.int8 import _Batches, int8_source, quantize_int8
    from detops.inference import load_predictor
    from detops.inference.predictor import load_image
    from detops.steps.export import calibration_files
    from detops.workspace import Workspace

    fp32 = workspace / "models" / "export" / "model.onnx"
    if not fp32.is_file():
        print(f"skipped: no {fp32} (run the export part first)")
        return
    ws = Workspace.at(workspace, load_params(workspace / "params.yaml", []))
    baseline = load_predictor(fp32)
    batches = [baseline.preprocess([load_image(p)])[0]
               for p in calibration_files(ws, ws.params.export.calibration_images)[0]]
    scorer = Scorer.of(ws, split="test")
    with tempfile.TemporaryDirectory() as tmp, int8_source(fp32, Path(tmp)) as source:
        prepared, tail = source.path, source.tail
        graph = onnx.load(str(prepared)).graph
        depthwise = [n.name for n in graph.node if n.op_type == "Conv"
                     and any(a.name == "group" and a.i > 1 for a in n.attribute)]

        def quantize(name: str, **changes: object) -> Path:
            options: dict[str, object] = dict(
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=tail,
                extra_options={"WeightSymmetric": True, "CalibPercentile": 99.999})
            options.update(changes)
            dst = Path(tmp) / f"{name}.onnx"
            quantize_static(str(prepared), str(dst), _Batches(batches), **options)
            return dst

        ours = Path(tmp) / "detops.onnx"
        quantize_int8(source, ours, batches, ws.params.export.calibration_method, "cpu", baseline.meta)
        files = {
            "FP32": fp32,
            f"detops (all ops, u8/s8 per-channel, {ws.params.export.calibration_method})": ours,
            "depthwise convs left float": quantize("dw", nodes_to_exclude=tail + depthwise),
            "Conv only": quantize("conv", op_types_to_quantize=["Conv"]),
            "per-tensor weights": quantize("tensor", per_channel=False),
            "uint8 weights (u8/u8)": quantize("u8u8", weight_type=QuantType.QUInt8,
                                              extra_options={"WeightSymmetric": False, "CalibPercentile": 99.999}),
        }
        medians = interleaved_p50_ms(list(files.values()), batches[0], threads, runs)
        scores = [float(scorer.score(path, threads=threads).metrics["test/map"] or 0.0) for path in files.values()]
    print(f"\n| INT8 recipe (BCCD model, {threads} threads, batch 1) | graph p50 ms | speed-up vs FP32 | test mAP "
          "| drop |\n|---|---|---|---|---|")
    for (name, _), ms, score in zip(files.items(), medians, scores, strict=True):
        print(f"| {name} | {ms:.2f} | {medians[0] / ms:.2f}x | {score:.4f} | {scores[0] - score:+.4f} |")


def runtimes(folder: Path, threads: int, runs: int) -> None:
    """ONNX Runtime and OpenVINO (f32 hint) on the FP32 and INT8 files, graph only, batch 1 and 8, interleaved."""
    from detops.export.openvino import VARIANTS, write_openvino_variants
    from detops.inference import load_predictor

    with tempfile.TemporaryDirectory(prefix="detops-runtimes-") as tmp:
        work = Path(tmp)
        for name in ("model.onnx", "model.int8.onnx"):
            (work / name).write_bytes((folder / name).read_bytes())
        write_openvino_variants(tuple(v for v in VARIANTS if v.hint == "f32"), work)
        files = {"ORT FP32": "model.onnx", "ORT INT8": "model.int8.onnx", "OV FP32 (f32 hint)": "model.openvino.onnx",
                 "OV INT8 (f32 hint)": "model.int8.openvino.onnx"}
        predictors = {label: load_predictor(work / name, threads=threads) for label, name in files.items()}
        size = next(iter(predictors.values())).meta.image_size
        rng = np.random.default_rng(0)
        medians: dict[int, list[float]] = {}
        for batch in (1, 8):
            x = rng.random((batch, 3, size, size), dtype=np.float32)
            times: list[list[float]] = [[] for _ in predictors]
            per_round = max(3, runs // (3 * batch))
            for _ in range(3):
                for i, predictor in enumerate(predictors.values()):
                    for _ in range(3):
                        predictor.runtime(x)
                    for _ in range(per_round):
                        start = time.perf_counter()
                        predictor.runtime(x)
                        times[i].append(time.perf_counter() - start)
            medians[batch] = [float(np.median(t) * 1000) for t in times]
    print(f"\n| runtime ({size} px, {threads} threads, graph p50) | batch 1 ms | batch 8 ms | vs ORT FP32 b1 / b8 |"
          "\n|---|---|---|---|")
    for i, label in enumerate(predictors):
        print(f"| {label} | {medians[1][i]:.2f} | {medians[8][i]:.2f} | {medians[1][0] / medians[1][i]:.2f} / "
              f"{medians[8][0] / medians[8][i]:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/detops-bench/bccd"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--backbones", action="store_true", help="also compare backbones (random weights)")
    parser.add_argument("--recipes", action="store_true", help="also compare INT8 recipes on the BCCD model")
    parser.add_argument("--runtimes", type=Path, metavar="FOLDER",
                        help="only compare ONNX Runtime and OpenVINO on this export folder's FP32 and INT8 files")
    args = parser.parse_args()
    if args.runtimes:
        runtimes(args.runtimes, args.threads, args.runs)
        return 0
    bccd_export(args.workspace, args.threads, args.runs)
    if args.backbones:
        backbones(args.threads)
    if args.recipes:
        recipes(args.workspace, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
