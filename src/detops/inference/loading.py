"""`load_predictor`: from a file to a ready predictor, the runtime chosen by the file's kind."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detops.errors import DataError
from detops.inference.decode import Thresholds
from detops.inference.meta import ModelMeta
from detops.inference.openvino_runtime import is_openvino_file
from detops.inference.predictor import Predictor

if TYPE_CHECKING:
    from detops.config.evaluate import EvaluateParams

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
ENGINE_SUFFIXES = (".engine", ".plan")


def load_predictor(path: str | Path, thresholds: Thresholds | None = None, device: str = "auto",
                   threads: int = 0) -> Predictor:
    """A predictor for a checkpoint, an `.onnx` file (`*.openvino.onnx`: OpenVINO) or a TensorRT engine.

    `thresholds` default to the file's own deployment thresholds; evaluation passes the `evaluate` params.
    `threads` > 0 pins the CPU threads (torch and ONNX Runtime alike, for fair comparisons).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found.")
    suffix = path.suffix.lower()
    if is_openvino_file(path):
        return _openvino_predictor(path, thresholds, threads)
    if suffix == ".onnx":
        from detops.inference.runtimes import OnnxRuntime

        onnx_runtime = OnnxRuntime(path, device, threads)
        meta = onnx_runtime.metadata(path)
        return Predictor(path, "onnx", onnx_runtime, meta, thresholds or meta.deployment())
    if suffix in ENGINE_SUFFIXES:
        from detops.inference.tensorrt import open_engine

        engine_runtime, meta = open_engine(path)
        return Predictor(path, "tensorrt", engine_runtime, meta, thresholds or meta.deployment())
    if suffix in CHECKPOINT_SUFFIXES:
        from detops.inference.runtimes import TorchRuntime

        torch_runtime = TorchRuntime(path, device, threads)
        meta = checkpoint_meta(torch_runtime.checkpoint_meta)
        return Predictor(path, "torch", torch_runtime, meta, thresholds or meta.deployment())
    raise DataError(f"{path}: unknown model file type {suffix!r}; expected a checkpoint "
                    f"({', '.join(CHECKPOINT_SUFFIXES)}), .onnx or a TensorRT engine ({', '.join(ENGINE_SUFFIXES)}).")


def _openvino_predictor(path: Path, thresholds: Thresholds | None, threads: int) -> Predictor:
    """An OpenVINO variant in OpenVINO; where openvino is not installed, the same ONNX graph in ONNX Runtime."""
    from detops.inference.openvino_runtime import OpenVinoRuntime, openvino_installed

    if openvino_installed():
        runtime = OpenVinoRuntime(path, threads)
        return Predictor(path, "openvino", runtime, runtime.meta, thresholds or runtime.meta.deployment())
    import logging

    from detops.inference.runtimes import OnnxRuntime

    logging.getLogger("detops.inference").warning(
        "%s: openvino is not installed (pip install 'detops[openvino]'); running it in ONNX Runtime instead.", path)
    onnx_runtime = OnnxRuntime(path, "cpu", threads)
    meta = onnx_runtime.metadata(path)
    return Predictor(path, "onnx", onnx_runtime, meta, thresholds or meta.deployment())


def checkpoint_meta(meta: dict[str, object]) -> ModelMeta:
    """The ModelMeta of a checkpoint, from what `load_detector` read out of its hyperparameters."""
    from detops.model.layout import PRE_NMS_TOP_K

    post = dict(meta["postprocess"])  # type: ignore[call-overload]
    return ModelMeta(
        class_ids=list(meta["class_ids"]),  # type: ignore[call-overload]
        class_names=list(meta["class_names"]),  # type: ignore[call-overload]
        image_size=int(meta["image_size"]),  # type: ignore[call-overload]
        pad_value=int(meta["pad_value"]),  # type: ignore[call-overload]
        evaluation=Thresholds(float(post["score_threshold"]), float(post["nms_iou"]), int(post["max_detections"]),
                              PRE_NMS_TOP_K),
        deploy_score_threshold=None,
        backbone=str(meta["backbone"]),
        run_id=meta.get("run_id"),  # type: ignore[arg-type]
    )


def evaluation_thresholds(params: EvaluateParams) -> Thresholds:
    """The `evaluate` params as decode thresholds: every variant is scored with exactly these."""
    from detops.model.layout import PRE_NMS_TOP_K

    return Thresholds(params.score_threshold, params.nms_iou, params.max_detections, PRE_NMS_TOP_K)
