"""`detops export` on a tiny trained model: every variant written, scored like `evaluate` and gated; parity
of ONNX with torch; graph structure of FP16 and INT8; torch-free prediction; bad input; `detops predict`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from test_train import TINY, make_workspace, run_train

from detops.dataset.canonical import read_dataset, write_dataset
from detops.errors import DataError, ExportError
from detops.inference import load_predictor
from detops.inference.loading import evaluation_thresholds
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
FAST = ["export.latency_runs=3", "export.warmup_runs=1", "export.calibration_images=6", "export.batch_sizes=[1,2]",
        "export.threads=2", "train.epochs=6", "export.openvino=false"]
VARIANTS = ["torch", "onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-trt"]


CALLS: dict[str, int] = {}  # what the export fixture's run called, by name


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Any]:
    from onnxruntime.quantization import shape_inference

    import detops.export.int8 as int8
    import detops.inference.tensorrt as tensorrt
    from detops.steps import export

    ws = make_workspace(tmp_path_factory.mktemp("export"), *FAST)
    run_train(ws)

    def counted(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            CALLS[name] = CALLS.get(name, 0) + 1
            return fn(*args, **kwargs)
        return wrapper

    tensorrt.current_target.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        for module, name in ((shape_inference, "quant_pre_process"), (int8, "decode_tail"), (tensorrt, "gpu_name")):
            patch.setattr(module, name, counted(name, getattr(module, name)))
        return ws, export.run(ws)


def test_int8_preparation_and_the_machine_query_once_per_export(exported: tuple[Workspace, Any]) -> None:
    assert CALLS["quant_pre_process"] == CALLS["decode_tail"] == 1, "both INT8 flavours start from one preparation"
    assert CALLS["gpu_name"] == 1, "nvidia-smi once: plan, engine names, sidecars, engine loads and the report"


def report(ws: Workspace) -> dict[str, Any]:
    return json.loads((ws.reports / "export.json").read_text(encoding="utf-8"))


def test_every_variant_is_written_scored_gated_and_reported(exported: tuple[Workspace, Any]) -> None:
    ws, result = exported
    folder = ws.models / "export"
    onnx_files = sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx")
    assert onnx_files == ["model.fp16.onnx", "model.int8-trt.onnx", "model.int8.onnx", "model.onnx"]
    data = report(ws)
    # where TensorRT and a GPU exist, export.tensorrt=auto adds engines after these (the gpu test checks them)
    assert list(data["variants"])[:len(VARIANTS)] == VARIANTS
    fp32 = data["variants"]["onnx-fp32"]["metrics"]["test/map"]
    for name in VARIANTS:
        row = data["variants"][name]
        assert row["accepted"] is (row["drop"] <= 0.01), name
        assert row["latency"]["e2e_p50_ms"] > 0 and row["latency"]["throughput_batch"] == 2
        assert row["timed_on"] == ("gpu" if "cuda" in row["runtime"].lower() else "cpu")
        assert row["runtime"].startswith("torch" if name == "torch" else "onnxruntime")
        assert abs(row["metrics"]["test/map"] - fp32) <= 0.05, name  # FP16 and INT8 stay close on the tiny model
    assert abs(data["variants"]["torch"]["metrics"]["test/map"] - fp32) <= 0.001
    engines = list(data["variants"])[len(VARIANTS):]
    assert data["deployable"]["cpu"] in VARIANTS
    assert data["deployable"]["gpu"] in ("onnx-fp16", "onnx-int8-trt", *engines)
    from detops.export.tensorrt import unavailable_reason

    if unavailable_reason() is not None:
        assert "TensorRT engines skipped" in " ".join(result.notes)
    markdown = (ws.reports / "export.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in markdown for name in VARIANTS) and data["machine"] in markdown
    assert (ws.reports / "plots" / "export_latency.png").stat().st_size > 5000
    # metrics of every variant logged into the training run
    from mlflow import MlflowClient

    from detops.tracking import read_run_id, tracking_uri

    logged = MlflowClient(tracking_uri(ws)).get_run(str(read_run_id(ws))).data.metrics
    assert logged["export/onnx-int8/map"] == pytest.approx(data["variants"]["onnx-int8"]["metrics"]["test/map"])


def test_onnx_fp32_matches_torch_on_real_images(exported: tuple[Workspace, Any]) -> None:
    ws, _ = exported
    thresholds = evaluation_thresholds(ws.params.evaluate)
    torch_p = load_predictor(ws.models / "best.ckpt", thresholds)
    onnx_p = load_predictor(ws.models / "export" / "model.onnx", thresholds)
    test = read_dataset(ws.split_json("test"))
    from detops.inference.dataset import dataset_images
    from detops.inference.predictor import load_image

    images = [load_image(p) for _, p in dataset_images(test, ws.root)]
    batch, letterboxes = torch_p.preprocess(images)
    raw_torch, raw_onnx = torch_p.runtime(batch), onnx_p.runtime(batch)  # batch > 1: the dynamic axis works
    np.testing.assert_allclose(raw_onnx[..., :4], raw_torch[..., :4], atol=1e-2)  # boxes, pixels
    np.testing.assert_allclose(raw_onnx[..., 4:], raw_torch[..., 4:], atol=1e-3)  # logits
    for a, b in zip(torch_p.postprocess(raw_torch, letterboxes), onnx_p.postprocess(raw_onnx, letterboxes),
                    strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert sum(len(d.scores) for d in torch_p.postprocess(raw_torch, letterboxes)) > 0  # not parity of nothing


@pytest.mark.shared
def test_onnx_fp32_matches_torch_on_real_photos(shared: Path, tmp_path: Path) -> None:
    """The same parity on BCCD's 640x480 blood-cell photos at 416 px, through ImageNet mobilenetv2_100 weights
    (real activations, unlike random weights): boxes within 1e-2 px and logits within 1e-3 before decode, the same
    detections after it."""
    import torch

    from detops.config.train import TrainParams
    from detops.export.graph import export_fp32
    from detops.inference.decode import Thresholds
    from detops.inference.meta import ModelMeta
    from detops.inference.predictor import load_image
    from detops.model.detector import Detector, DetectorConfig

    torch.manual_seed(0)
    weights = shared / "weights" / "mobilenetv2_100.imagenet.safetensors"
    config = DetectorConfig.from_params(TrainParams(), 3, backbone="mobilenetv2_100", image_size=416)
    model = Detector(config, pretrained=str(weights)).eval()
    meta = ModelMeta([1, 2, 3], ["RBC", "WBC", "Platelets"], 416, 114, Thresholds(0.001, 0.6, 100, 1000), 0.3)
    path = tmp_path / "model.onnx"
    export_fp32(model, path, 416, 17, meta)
    onnx_p = load_predictor(path, meta.evaluation)  # score 0.001: the untrained head scores low
    photos = sorted((shared / "datasets/bccd/BCCD/JPEGImages").glob("*.jpg"))[:4]
    batch, letterboxes = onnx_p.preprocess([load_image(p) for p in photos])
    with torch.inference_mode():
        raw_torch = model(torch.from_numpy(batch)).numpy()
    raw_onnx = onnx_p.runtime(batch)
    np.testing.assert_allclose(raw_onnx[..., :4], raw_torch[..., :4], atol=1e-2)
    np.testing.assert_allclose(raw_onnx[..., 4:], raw_torch[..., 4:], atol=1e-3)
    # After decode: the same scores, and the same boxes in the same order, except where an untrained head gives
    # two overlapping boxes scores equal to within float noise (NMS may then keep either; a trained model's
    # scores are far apart, and the tiny trained model above matches exactly).
    same = total = 0
    for a, b in zip(onnx_p.postprocess(raw_torch, letterboxes), onnx_p.postprocess(raw_onnx, letterboxes),
                    strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        same += int(np.all(np.abs(a.boxes - b.boxes) <= 1e-2, axis=1).sum() if len(a.boxes) == len(b.boxes) else 0)
        total += len(a.scores)
    assert total > 0 and same >= 0.98 * total, (same, total)


def test_metadata_makes_each_file_self_sufficient(exported: tuple[Workspace, Any]) -> None:
    ws, _ = exported
    from detops.tracking import read_run_id

    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-trt.onnx"):
        meta = load_predictor(ws.models / "export" / name).meta
        assert meta.class_ids == [3, 7] and meta.class_names == ["box", "disc"] and meta.image_size == 64
        assert meta.evaluation.score_threshold == ws.params.evaluate.score_threshold
        assert meta.deploy_score_threshold == ws.params.predict.score_threshold
        assert meta.run_id == read_run_id(ws) and meta.detops_version and meta.pad_value == 114
    assert load_predictor(ws.models / "export" / "model.int8.onnx").meta.precision.startswith("int8")


def _ops_on_path(model: onnx.ModelProto) -> dict[str, str]:
    return {node.name: node.op_type for node in model.graph.node}


def test_int8_has_qdq_around_convs_and_none_in_the_decode_tail(exported: tuple[Workspace, Any]) -> None:
    ws, _ = exported
    from detops.export.graph import decode_tail

    tail = set(decode_tail(onnx.load(str(ws.models / "export" / "model.onnx"))))
    assert {"/Exp", "/Concat_12"} <= tail or any("Exp" in n for n in tail)
    for name in ("model.int8.onnx", "model.int8-trt.onnx"):
        model = onnx.load(str(ws.models / "export" / name))
        producer = {out: node for node in model.graph.node for out in node.output}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert convs and all(producer[c.input[0]].op_type == "DequantizeLinear" for c in convs)
        assert all(producer[c.input[1]].op_type == "DequantizeLinear" for c in convs)  # weights too
        exp = next(n for n in model.graph.node if n.op_type == "Exp")
        assert producer[exp.input[0]].op_type not in ("DequantizeLinear", "QuantizeLinear")
        final = producer[model.graph.output[0].name]
        assert final.op_type == "Concat" and all(producer[i].op_type != "DequantizeLinear" for i in final.input)
        zero_points = [i for i in model.graph.initializer if i.name.endswith("_zero_point")]
        types = {onnx.helper.tensor_dtype_to_np_dtype(z.data_type) for z in zero_points}
        assert (np.dtype("uint8") in types) is (name == "model.int8.onnx")  # TensorRT: symmetric int8 only


def test_int8_calibration_holds_one_chunk_of_activations_at_a_time(exported: tuple[Workspace, Any],
                                                                   tmp_path: Path) -> None:
    """ONNX Runtime's calibrators keep every activation of a collect until it is folded into the histograms: in
    chunks the peak stays put as images are added, and the INT8 file stays as close to FP32 as one calibrated at
    once."""
    import tracemalloc

    from detops.export.int8 import calibration_stride, int8_source, quantize_int8

    assert [calibration_stride(n, 8) for n in (64, 16, 12, 7, 5, 1)] == [8, 8, 6, 7, 5, 1]  # no remainder: ORT's rule
    ws, _ = exported
    fp32 = load_predictor(ws.models / "export" / "model.onnx")
    size = fp32.meta.image_size
    batches = [np.random.default_rng(i).random((1, 3, size, size), dtype=np.float32) for i in range(48)]
    peaks = {}
    with int8_source(ws.models / "export" / "model.onnx", tmp_path) as source:
        for chunk in (48, 4):
            tracemalloc.start()
            quantize_int8(source, tmp_path / f"chunk{chunk}.onnx", batches, "percentile", "cpu", fp32.meta, chunk)
            peaks[chunk] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert peaks[4] < 0.5 * peaks[48], peaks  # measured here: 5.1 vs 15.4 MB
    probe = np.concatenate(batches[:4])
    want = fp32.runtime(probe)
    errors = {chunk: float(np.abs(load_predictor(tmp_path / f"chunk{chunk}.onnx").runtime(probe) - want).mean())
              for chunk in (48, 4)}
    assert errors[4] < 1.5 * errors[48] + 1e-6, errors


def test_fp16_keeps_float32_io_and_a_float32_exp(exported: tuple[Workspace, Any]) -> None:
    ws, _ = exported
    model = onnx.load(str(ws.models / "export" / "model.fp16.onnx"))
    fp32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == fp32
    assert model.graph.output[0].type.tensor_type.elem_type == fp32
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    exp = next(n for n in model.graph.node if n.op_type == "Exp")
    assert types[exp.input[0]] == fp32 and types[exp.output[0]] == fp32
    weights = [i for i in model.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)


@pytest.mark.parametrize("name", ["model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-trt.onnx"])
def test_each_onnx_file_alone_predicts_where_torch_cannot_be_imported(
    exported: tuple[Workspace, Any], tmp_path: Path, name: str
) -> None:
    ws, _ = exported
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(ws.models / "export" / name, alone / name)
    image = next(iter(sorted((ws.root / "data" / "raw" / "tiny" / "images").iterdir())))
    script = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['torchvision'] = None  # import torch now fails\n"
        "from detops.inference import load_predictor\n"
        f"p = load_predictor({str(alone / name)!r})\n"
        "p = p.with_thresholds(p.meta.evaluation)\n"
        f"(det,) = p.predict([{str(image)!r}])\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(len(det), p.meta.class_names, p.runtime_name)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    count, _, _ = out.stdout.partition(" ")
    assert int(count) > 0 and "['box', 'disc']" in out.stdout


def test_a_tight_gate_rejects_a_variant_and_the_step_goes_on(exported: tuple[Workspace, Any]) -> None:
    from detops.config import load_params
    from detops.steps import export

    ws, _ = exported
    # One calibration image and no tolerance: INT8 loses accuracy the gate must catch.
    tight = Workspace.at(ws.root, load_params(ws.root / "params.yaml", [
        *ws_overrides(), "export.max_map_drop=0.0", "export.calibration_images=1", "export.fp16=false"]))
    result = export.run(tight)
    data = report(tight)
    rejected = [name for name, row in data["variants"].items() if row["accepted"] is False]
    assert rejected and set(rejected) <= {"onnx-int8", "onnx-int8-trt"}
    assert data["variants"]["onnx-fp32"]["accepted"] and data["deployable"]["cpu"] not in rejected
    assert "REJECTED" in (tight.reports / "export.md").read_text(encoding="utf-8")
    assert result.metrics["deployable cpu"] == data["deployable"]["cpu"]
    export.run(ws)  # leave the module's workspace as the other tests expect


def ws_overrides() -> list[str]:
    return [*TINY, *FAST]


def test_bad_input_is_a_clear_error_and_writes_nothing(exported: tuple[Workspace, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from detops.steps import export

    ws, _ = exported
    before = {p.name: p.stat().st_mtime_ns for p in (ws.models / "export").iterdir()}
    reports = {p: p.read_bytes() for p in (ws.reports / "export.json", ws.reports / "plots" / "export_latency.png")}

    # classes differ: the test split names another class set
    other = tmp_path / "other"
    shutil.copytree(ws.root, other, ignore=shutil.ignore_patterns("export", "mlflow.db", "mlartifacts"))
    ows = Workspace.at(other, ws.params)
    test = read_dataset(ows.split_json("test"))
    test["categories"] = [{"id": 3, "name": "box"}, {"id": 9, "name": "star"}]
    test["annotations"] = [a for a in test["annotations"] if a["category_id"] == 3]
    write_dataset(ows.split_json("test"), test)
    with pytest.raises(DataError, match=r"classes \['box', 'disc'\].*differ.*\['box', 'star'\]"):
        export.run(ows)
    assert not (ows.models / "export").exists()

    # missing checkpoint
    (ows.models / "best.ckpt").unlink()
    report_before = (ows.reports / "export.json").read_bytes()  # copied from the trained workspace
    with pytest.raises(DataError, match="checkpoint not found"):
        export.run(ows)
    assert not (ows.models / "export").exists() and (ows.reports / "export.json").read_bytes() == report_before

    # TensorRT required where there is none
    from detops.config import load_params

    strict = Workspace.at(ws.root, load_params(ws.root / "params.yaml", [*ws_overrides(), "export.tensorrt=true"]))
    from detops.export.tensorrt import unavailable_reason

    if unavailable_reason() is not None:
        with pytest.raises(ExportError, match=r"export\.tensorrt is true but"):
            export.run(strict)

    # a failure half-way (INT8 quantization) leaves the previous export untouched
    import detops.export.variants as variants

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("quantizer crashed")

    monkeypatch.setattr(variants, "quantize_int8", broken)
    with pytest.raises(RuntimeError, match="quantizer crashed"):
        export.run(ws)
    assert {p.name: p.stat().st_mtime_ns for p in (ws.models / "export").iterdir()} == before
    assert not [p for p in ws.models.iterdir() if p.name.startswith(".export")]
    assert all(p.read_bytes() == content for p, content in reports.items())


def test_a_truncated_onnx_file_is_a_clear_error(exported: tuple[Workspace, Any], tmp_path: Path) -> None:
    ws, _ = exported
    whole = (ws.models / "export" / "model.int8.onnx").read_bytes()
    cut = tmp_path / "model.int8.onnx"
    cut.write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    with pytest.raises(DataError, match=r"model.int8.onnx: ONNX Runtime cannot load this model .* truncated"):
        load_predictor(cut)
    assert (ws.models / "export" / "model.int8.onnx").read_bytes() == whole


def test_fewer_calibration_images_than_asked_is_a_note(exported: tuple[Workspace, Any]) -> None:
    from detops.config import load_params
    from detops.steps.export import calibration_files

    ws, _ = exported
    many = Workspace.at(ws.root, load_params(ws.root / "params.yaml", [*ws_overrides(),
                                                                       "export.calibration_images=500"]))
    files, notes = calibration_files(many, 500)
    assert len(files) == 8 and notes == ["INT8 calibrated on all 8 train images, fewer than "
                                         "export.calibration_images=500"]
    assert len(calibration_files(ws, 3)[0]) == 3


def test_predict_command_on_a_folder_writes_coco_results_and_drawings(exported: tuple[Workspace, Any],
                                                                       tmp_path: Path) -> None:
    ws, _ = exported
    images = ws.root / "data" / "raw" / "tiny" / "images"
    out = tmp_path / "pred"
    env = {**os.environ, "DO_NOT_TRACK": "1"}
    cmd = [str(Path(sys.executable).parent / "detops"), "--workspace", str(ws.root), "--set",
           "predict.score_threshold=0.05", "predict", str(images), "--model", str(ws.models / "export" / "model.onnx"),
           "--out", str(out), "--draw"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert results and {r["category_name"] for r in results} <= {"box", "disc"}
    assert all(r["score"] >= 0.05 and r["file_name"].endswith(".png") for r in results)
    assert len(list((out / "images").glob("*.jpg"))) == len(list(images.glob("*.png")))
    missing = subprocess.run([*cmd[:-5], "--model", str(tmp_path / "nope.onnx")], capture_output=True, text=True,
                             env=env, timeout=300)
    assert missing.returncode == 2 and "model file not found" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.gpu
def test_tensorrt_engines_are_built_scored_and_bound_to_this_gpu(exported: tuple[Workspace, Any]) -> None:
    from detops.config import load_params
    from detops.export.tensorrt import unavailable_reason
    from detops.inference.tensorrt import current_target, read_sidecar
    from detops.steps import export

    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs TensorRT on this GPU machine: {reason}")
    ws, _ = exported
    strict = Workspace.at(ws.root, load_params(ws.root / "params.yaml", [*ws_overrides(), "export.tensorrt=true"]))
    export.run(strict)
    data = report(strict)
    for name in ("tensorrt-fp16", "tensorrt-int8"):
        row = data["variants"][name]
        assert row["timed_on"] == "gpu" and row["runtime"].startswith("tensorrt")
        engine = ws.root / row["file"]
        assert current_target().slug() in engine.name
        meta, target, batches = read_sidecar(engine)
        assert target == current_target() and batches == [1, 2] and meta.class_names == ["box", "disc"]
        assert load_predictor(engine).predict([np.zeros((48, 80, 3), np.uint8)]) is not None
    assert (ws.root / ".cache" / "tensorrt").is_dir()  # timing cache kept outside the stage's outputs



def test_library_prints_go_to_the_step_log_and_the_terminal_keeps_the_summary(exported: tuple[Workspace, Any],
                                                                                tmp_path: Path) -> None:
    """`detops export` as a user runs it: ONNX Runtime's calibration prints (Python prints), C-level writes and
    warnings land in reports/logs/export.log; the terminal gets our summary only."""
    from detops.steplog import log_path

    ws, _ = exported
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy, ignore=shutil.ignore_patterns("export"))
    sets = [arg for item in ws_overrides() for arg in ("--set", item)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([str(Path(sys.executable).parent / "detops"), "-w", str(copy), *sets, "export"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]  # no library print, warning or bar (not a terminal: no bar of ours)
    assert "detops export" in done.stdout and "Collecting tensor data" not in done.stdout
    log = log_path(Workspace.at(copy, ws.params), "export").read_text(encoding="utf-8")
    assert "Collecting tensor data and making histogram" in log and "Finding optimal threshold" in log
    from detops.reporting.page import build_run_page

    page = build_run_page(Workspace.at(copy, ws.params)).read_text(encoding="utf-8")
    assert '<a href="logs/export.log">export</a>' in page  # the run page links the step's log


def test_a_timing_process_that_dies_rejects_its_files_with_the_reason(tmp_path: Path) -> None:
    """The child that times the variants and scores the OpenVINO files exits on an error (here: no split to score
    on): each file it held comes back rejected, saying the exit code and the child's last words, and nothing is
    raised here."""
    from detops.config import load_params
    from detops.export.timing import measure_in_child
    from detops.inference.decode import Thresholds
    from detops.workspace import Workspace

    ws = Workspace.at(tmp_path, load_params(None))
    files = {"openvino-int8": tmp_path / "model.int8.openvino.onnx", "openvino-fp32": tmp_path / "model.openvino.onnx"}
    outcomes = measure_in_child(ws, files, {n: p.name for n, p in files.items()}, [], Thresholds(0.3, 0.5, 100, 1000),
                                2, 3, 0, 1)
    assert set(outcomes) == set(files)
    for outcome in outcomes.values():
        assert outcome.error is not None and outcome.latency is None and not outcome.metrics
        assert "exited with code 1" in outcome.error and "split file is missing" in outcome.error, outcome.error
