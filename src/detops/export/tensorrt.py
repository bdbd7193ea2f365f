"""TensorRT engines from the exported ONNX files (TensorRT 10.12 to 11.x, strongly typed networks).

A strongly typed network takes its precisions from the ONNX file: the FP16 engine is built from the FP16
ONNX file and the INT8 engine from the symmetric QDQ file. The timing cache lives outside the stage's
outputs (DVC deletes outputs before a re-run) so rebuilding an unchanged model is fast.
"""

from __future__ import annotations

from pathlib import Path

from detops.errors import DataError
from detops.inference.meta import INPUT_NAME, ModelMeta
from detops.inference.tensorrt import EngineTarget, current_target, write_sidecar


def unavailable_reason() -> str | None:
    """Why no engine can be built here, or None when TensorRT and an NVIDIA GPU are both present."""
    target = current_target()
    if target.tensorrt is None:
        return "TensorRT is not installed (pip install 'detops[tensorrt]')"
    if target.gpu is None:
        return "no NVIDIA GPU found (nvidia-smi)"
    return None


def engine_path(folder: Path, stem: str, target: EngineTarget) -> Path:
    """`model.fp16.trt10.13.0-nvidia-h100.engine`: an engine only runs where it was built, so say where."""
    return folder / f"{stem}.{target.slug()}.engine"


def build_engine(onnx_path: Path, engine: Path, meta: ModelMeta, batch_sizes: list[int], timing_cache: Path) -> None:
    """Parse the ONNX file into a strongly typed network, one optimisation profile over `batch_sizes`."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Required on 10.x, accepted and ignored on 11.x, where every network is strongly typed.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DataError(f"{onnx_path}: TensorRT cannot parse this ONNX file: {errors}")
    config = builder.create_builder_config()
    size = meta.image_size
    profile = builder.create_optimization_profile()
    low, high = min(batch_sizes), max(batch_sizes)
    profile.set_shape(INPUT_NAME, (low, 3, size, size), (high, 3, size, size), (high, 3, size, size))
    config.add_optimization_profile(profile)
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DataError(f"{onnx_path}: TensorRT failed to build an engine (see the TensorRT log above).")
    engine.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    write_sidecar(engine, meta, current_target(), sorted(batch_sizes))
