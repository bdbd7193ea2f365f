"""OpenVINO variants of `detops export` on a tiny trained model: written, scored, gated, timed, reported and
packaged; FP32 parity with the FP32 ONNX file where torch cannot be imported; the deployable choice; BF16 only
where the CPU has it, else f32 with a warning; a file OpenVINO rejects; no openvino installed."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _files import tree_hash
from test_export import FAST
from test_train import make_workspace, run_train

from detops.errors import DataError, ExportError
from detops.inference import load_predictor
from detops.workspace import Workspace

# OpenVINO beside torch in the suite's long-lived process died with a segmentation fault after other tests had run:
# these tests load it here, so they run in a pytest process of their own, started by tests/test_openvino_process.py.
pytestmark = [pytest.mark.openvino, pytest.mark.skipif(os.environ.get("DETOPS_OPENVINO_PROCESS") != "1",
                                                       reason="runs in its own process (test_openvino_process.py)")]

OPENVINO = ["openvino-int8", "openvino-fp32"]  # openvino-bf16 joins them only on a CPU with BF16
SETTINGS = [*(s for s in FAST if not s.startswith("export.openvino")), "export.openvino=true", "export.fp16=false"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Any]:
    from detops.steps import export

    ws = make_workspace(tmp_path_factory.mktemp("openvino"), *SETTINGS)
    run_train(ws)
    return ws, export.run(ws)


def report(ws: Workspace) -> dict[str, Any]:
    return json.loads((ws.reports / "export.json").read_text(encoding="utf-8"))


def has_bf16() -> bool:
    from detops.inference.openvino_runtime import cpu_capabilities

    return "BF16" in cpu_capabilities()


def test_openvino_variants_are_scored_gated_timed_reported_and_packaged(exported: tuple[Workspace, Any]) -> None:
    from detops.inference.openvino_runtime import cpu_capabilities
    from detops.registry.package import model_files
    from detops.tracking import read_run_id

    ws, result = exported
    folder = ws.models / "export"
    data = report(ws)
    expected = [*OPENVINO, "openvino-bf16"] if has_bf16() else OPENVINO
    assert [n for n in data["variants"] if n.startswith("openvino")] == expected
    for name in expected:
        row = data["variants"][name]
        assert (folder / Path(row["file"]).name).is_file() and row["file"].endswith(".openvino.onnx")
        assert row["runtime"].startswith("openvino") and row["runtime"].endswith(
            "bf16)" if name == "openvino-bf16" else "f32)")
        assert row["accepted"] is (row["drop"] <= 0.01), name
        assert row["latency"]["e2e_p50_ms"] > 0 and row["latency"]["throughput_batch"] == 2
        assert row["timed_on"] == "cpu" and row["target"] == "cpu"
        assert row["extra"]["openvino"] == ({"precision_hint": "bf16", "requires": ["BF16"]} if name == "openvino-bf16"
                                            else {"precision_hint": "f32", "requires": []})
    fp32 = data["variants"]["onnx-fp32"]["metrics"]["test/map"]
    assert abs(data["variants"]["openvino-fp32"]["metrics"]["test/map"] - fp32) <= 0.001  # the same f32 math
    if not has_bf16():
        assert any("openvino-bf16 not offered: this CPU lacks BF16" in note for note in result.notes)
    # the CPU it was measured on, and the ranking the deployable choice came from
    flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split("flags", 1)[1].splitlines()[0].split()
    assert set(data["cpu"]["flags"]) <= set(flags) and ("avx2" in flags) == ("avx2" in data["cpu"]["flags"])
    assert data["cpu"]["openvino_capabilities"] == list(cpu_capabilities())
    cpu_rows = {n: r for n, r in data["variants"].items() if r["accepted"] and r["target"] == "cpu"}
    assert sorted(data["ranking"]["cpu"]) == sorted(cpu_rows)
    assert data["deployable"]["cpu"] == data["ranking"]["cpu"][0] == min(
        cpu_rows, key=lambda n: 1 / cpu_rows[n]["latency"]["throughput_ips"])
    markdown = (ws.reports / "export.md").read_text(encoding="utf-8")
    assert all(f"| {name} |" in markdown for name in expected) and "CPU flags: " in markdown
    # every accepted OpenVINO file travels with the registered model; the deployable one is served
    files = model_files(ws, str(read_run_id(ws)))
    assert {n for n in expected if data["variants"][n]["accepted"]} <= set(files.artifacts)
    assert files.serve == data["deployable"]["cpu"]


def test_openvino_fp32_predicts_like_the_onnx_file_where_torch_cannot_be_imported(
    exported: tuple[Workspace, Any], tmp_path: Path
) -> None:
    ws, _ = exported
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in ("model.onnx", "model.openvino.onnx"):
        shutil.copy(ws.models / "export" / name, alone / name)
    images = sorted(str(p) for p in (ws.root / "data" / "raw" / "tiny" / "images").iterdir())
    # the tolerances of test_export's ONNX parity test
    script = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['torchvision'] = None  # import torch now fails\n"
        "import numpy as np\n"
        "from detops.inference import load_predictor\n"
        "from detops.inference.predictor import load_image\n"
        f"ort = load_predictor({str(alone / 'model.onnx')!r}, threads=1)\n"
        f"ov = load_predictor({str(alone / 'model.openvino.onnx')!r}, threads=1)\n"
        "assert ov.kind == 'openvino' and ov.runtime.hint == 'f32', ov.runtime_name\n"
        "ort, ov = ort.with_thresholds(ort.meta.evaluation), ov.with_thresholds(ov.meta.evaluation)\n"
        f"images = [load_image(p) for p in {images!r}]\n"
        "batch, letterboxes = ort.preprocess(images)\n"
        "raw_ort, raw_ov = ort.runtime(batch), ov.runtime(batch)\n"
        "np.testing.assert_allclose(raw_ov[..., :4], raw_ort[..., :4], atol=1e-2)  # boxes, pixels\n"
        "np.testing.assert_allclose(raw_ov[..., 4:], raw_ort[..., 4:], atol=1e-3)  # logits\n"
        "found = 0\n"
        "for a, b in zip(ort.postprocess(raw_ort, letterboxes), ov.postprocess(raw_ov, letterboxes), strict=True):\n"
        "    np.testing.assert_array_equal(a.labels, b.labels)\n"
        "    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)\n"
        "    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)\n"
        "    found += len(a)\n"
        "(one,) = ov.predict([images[0]])  # batch 1: another static shape, compiled on first use\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(found, len(images), ov.runtime_name)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr
    found, count, runtime = out.stdout.split(" ", 2)
    assert int(found) > 0 and int(count) == len(images) and runtime.startswith("openvino")  # not parity of nothing


def test_threads_predicting_at_once_get_the_answers_each_gets_alone(exported: tuple[Workspace, Any]) -> None:
    """MLflow's model server calls one loaded model from several threads; with one shared infer request they
    overwrote each other's outputs (wrong shapes, failed requests)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from detops.inference.predictor import load_image

    ws, _ = exported
    predictor = load_predictor(ws.models / "export" / "model.int8.openvino.onnx", threads=1)
    images = [load_image(p) for p in sorted((ws.root / "data" / "raw" / "tiny" / "images").iterdir())]
    calls, sizes = [], itertools.cycle([1, 3, 1, 2])  # batch 1 and larger: both compiled models, shared by threads
    while sum(map(len, calls)) < len(images):
        start = sum(map(len, calls))
        calls.append(images[start : start + next(sizes)])
    alone = [predictor.predict_arrays(c) for c in calls]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(predictor.predict_arrays, calls * 4))
    assert sum(len(d) for ds in alone for d in ds) > 0  # not agreement on nothing
    for want, got in zip(alone * 4, together, strict=True):
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a.labels, b.labels)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def variant(name: str, accepted: bool, e2e_ms: float, ips: float, target: str = "cpu") -> Any:
    from detops.export.gate import Variant

    latency = {"e2e_p50_ms": e2e_ms, "e2e_p95_ms": e2e_ms, "graph_p50_ms": e2e_ms, "graph_p95_ms": e2e_ms,
               "throughput_batch": 8, "throughput_ips": ips}
    return Variant(name=name, file=f"{name}.onnx", precision="-", runtime="-", target=target, size_mb=1.0,
                   metrics={}, latency=latency, timed_on=target, accepted=accepted)


def test_the_deployable_is_the_fastest_accepted_per_image_at_the_served_batch() -> None:
    from detops.export.gate import deployable, ranking

    variants = [
        variant("onnx-fp32", True, 10.0, 100.0),
        variant("onnx-int8", True, 5.0, 150.0),  # fastest alone at batch 1, slower per image at batch 8
        variant("openvino-int8", True, 6.0, 300.0),
        variant("openvino-bf16", False, 2.0, 900.0),  # rejected by the gate: never deployed however fast
        variant("onnx-fp16", True, 1.0, 1000.0, target="gpu"),  # another target
    ]
    assert ranking(variants, "cpu") == ["openvino-int8", "onnx-int8", "onnx-fp32"]
    assert deployable(variants) == {"cpu": "openvino-int8", "gpu": "onnx-fp16"}
    tie = [variant("a", True, 9.0, 100.0), variant("b", True, 4.0, 100.0)]
    assert ranking(tie, "cpu") == ["b", "a"]  # same cost per image: the lower batch-1 latency


def test_bf16_is_offered_only_with_the_capability_and_elsewhere_runs_as_f32(
    exported: tuple[Workspace, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import numpy as np

    import detops.inference.openvino_runtime as runtime
    from detops.export.openvino import VARIANTS, offered, write_openvino_variants

    names = [v.name for v in offered(("FP32", "INT8"), int8=True).variants]
    assert names == ["openvino-int8", "openvino-fp32"]
    assert offered(("FP32", "INT8"), int8=True).notes == (
        "openvino-bf16 not offered: this CPU lacks BF16 (OpenVINO reports FP32, INT8)",)
    assert [v.name for v in offered(("FP32", "INT8", "BF16"), int8=False).variants] == ["openvino-fp32",
                                                                                       "openvino-bf16"]

    # a BF16 file exported elsewhere, loaded on a CPU without BF16 (this one, or one made to look so)
    ws, _ = exported
    shutil.copy(ws.models / "export" / "model.onnx", tmp_path / "model.onnx")
    (bf16,) = write_openvino_variants(tuple(v for v in VARIANTS if v.name == "openvino-bf16"), tmp_path)
    assert bf16.path.name == "model.bf16.openvino.onnx"
    monkeypatch.setattr(runtime, "cpu_capabilities", lambda: ("FP32", "INT8"))
    with caplog.at_level(logging.WARNING, logger="detops.inference"):
        fallback = load_predictor(bf16.path, threads=1)
    assert fallback.runtime.hint == "f32" and fallback.runtime_name.endswith("(CPU, f32)")  # type: ignore[attr-defined]
    assert "needs BF16, which this CPU lacks" in caplog.text and "openvino-fp32" in caplog.text
    fp32 = load_predictor(ws.models / "export" / "model.openvino.onnx", threads=1)
    batch = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    np.testing.assert_array_equal(fallback.runtime(batch), fp32.runtime(batch))


def test_serving_loads_and_warms_an_openvino_variant(exported: tuple[Workspace, Any]) -> None:
    """A server warms batch sizes 1 and 8 only (each compiled size holds its own weights); a batch of 5 then runs
    on those two (split into ones, or padded to 8, by their measured cost), compiles nothing, and answers as five
    single images do."""
    import numpy as np

    from detops.serving.loaded import file_version, load, warm_up

    ws, _ = exported
    path = ws.models / "export" / "model.int8.openvino.onnx"
    model = load(path, role="champion", name=path.name, version=file_version(path), alias=None,
                 variant="openvino-int8", device="auto", threads=1, score_threshold=0.3)
    warm_up(model, None, (1, 8))
    runtime = model.predictor.runtime
    assert model.info.runtime.startswith("openvino") and model.info.thresholds["score_threshold"] == 0.3
    assert runtime.static_batches == (1, 8)  # type: ignore[attr-defined]
    assert runtime.plan(5) in ([1] * 5, [8]) and runtime.plan(8) == [8]  # type: ignore[attr-defined]
    images = [np.random.default_rng(i).integers(0, 255, (50, 70, 3), dtype=np.uint8) for i in range(5)]
    model.warm.set()
    together = model.predict(images)
    assert runtime.static_batches == (1, 8)  # type: ignore[attr-defined]  # no compile for 5
    for image, answer in zip(images, together, strict=True):
        (alone,) = model.predict([image])
        np.testing.assert_allclose(answer.boxes, alone.boxes, atol=0.05)
        np.testing.assert_allclose(answer.scores, alone.scores, atol=1e-3)


def test_a_batch_runs_split_or_padded_by_the_measured_cost(exported: tuple[Workspace, Any]) -> None:
    """With sizes 1 and 8 compiled, a batch of 7 pads to 8 when one call of 8 measured cheaper than seven of 1,
    and splits when it did not; a batch larger than every compiled size compiles its own."""
    ws, _ = exported
    runtime: Any = load_predictor(ws.models / "export" / "model.openvino.onnx", threads=1).runtime
    runtime._seconds.update({1: 0.010, 8: 0.050})  # what measuring would leave: 7 x 10 ms > 50 ms
    runtime._compiled[8] = runtime._compile(8)
    assert runtime.plan(7) == [8] and runtime.plan(3) == [1, 1, 1] and runtime.plan(8) == [8]
    runtime._seconds[8] = 0.080
    assert runtime.plan(7) == [1] * 7 and runtime.plan(9) == [9]


def test_static_models_per_batch_size_answer_as_the_dynamic_axis_does(exported: tuple[Workspace, Any]) -> None:
    import numpy as np

    from detops.inference.openvino_runtime import STATIC_BATCHES

    ws, _ = exported
    runtime = load_predictor(ws.models / "export" / "model.openvino.onnx", threads=1).runtime
    size = runtime.meta.image_size  # type: ignore[attr-defined]
    batch = np.random.default_rng(0).random((STATIC_BATCHES + 1, 3, size, size), dtype=np.float32)
    whole = runtime(batch)  # above STATIC_BATCHES: the dynamic batch axis
    parts = np.concatenate([runtime(batch[:1]), runtime(batch[1:4]), runtime(batch[4:])])  # static 1, 3 and 13
    assert runtime.static_batches == (1, 3, 13)  # type: ignore[attr-defined]
    np.testing.assert_allclose(parts[..., :4], whole[..., :4], atol=1e-2)  # boxes, pixels
    np.testing.assert_allclose(parts[..., 4:], whole[..., 4:], atol=1e-3)  # logits


def test_without_openvino_export_says_so_and_the_file_runs_in_onnx_runtime(
    exported: tuple[Workspace, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from detops.export.openvino import plan

    ws, _ = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    skipped = plan("auto", int8=True)
    assert skipped.variants == () and skipped.notes == (
        "OpenVINO variants skipped: openvino is not installed (pip install 'detops[openvino]'); going on with ONNX "
        "Runtime",)
    with pytest.raises(ExportError, match=r"export\.openvino is true but openvino is not installed"):
        plan(True, int8=True)
    assert plan(False, int8=True).variants == ()
    with caplog.at_level(logging.WARNING, logger="detops.inference"):
        predictor = load_predictor(ws.models / "export" / "model.int8.openvino.onnx", threads=1)
    assert predictor.kind == "onnx" and predictor.runtime_name.startswith("onnxruntime")
    assert "openvino is not installed" in caplog.text


def test_a_file_openvino_rejects_is_a_clear_error_and_the_onnx_variants_ship(
    exported: tuple[Workspace, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs a second export: keep it last, the tests above read the first one."""
    import detops.export.openvino as openvino
    from detops.registry.package import model_files
    from detops.steps import export
    from detops.tracking import read_run_id

    ws, _ = exported
    whole = (ws.models / "export" / "model.int8.openvino.onnx").read_bytes()
    cut = tmp_path / "model.int8.openvino.onnx"
    cut.write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    with pytest.raises(DataError, match=r"model.int8.openvino.onnx: OpenVINO cannot read this model \(.+\).*"
                                        r"corrupt or truncated"):
        load_predictor(cut)

    written = openvino.write_openvino_variants

    def truncating(*args: Any, **kwargs: Any) -> Any:  # the disk cut the INT8 copy short
        files = written(*args, **kwargs)
        int8 = next(f.path for f in files if f.name == "openvino-int8")
        int8.write_bytes(int8.read_bytes()[:1000])
        return files

    monkeypatch.setattr(openvino, "write_openvino_variants", truncating)
    sources = tree_hash(ws.root / "data", ws.models / "best.ckpt")
    result = export.run(ws)
    assert tree_hash(ws.root / "data", ws.models / "best.ckpt") == sources  # the data and checkpoint untouched
    data = report(ws)
    broken = data["variants"]["openvino-int8"]
    assert broken["accepted"] is False and broken["latency"] is None
    assert broken["reason"].startswith("models/export/model.int8.openvino.onnx: OpenVINO cannot read this model")
    assert ("openvino-int8 rejected: OpenVINO cannot load models/export/model.int8.openvino.onnx (reason in the "
            "report)") in result.notes
    for name in ("onnx-fp32", "onnx-int8", "openvino-fp32"):
        assert data["variants"][name]["accepted"] is (data["variants"][name]["drop"] <= 0.01), name
    assert data["variants"]["onnx-fp32"]["accepted"] and data["deployable"]["cpu"] != "openvino-int8"
    assert "openvino-int8" not in data["ranking"]["cpu"]
    assert "| openvino-int8 |" in (ws.reports / "export.md").read_text(encoding="utf-8")
    files = model_files(ws, str(read_run_id(ws)))
    assert "openvino-int8" not in files.artifacts and "onnx-fp32" in files.artifacts
