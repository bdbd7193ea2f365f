"""Write every exported file of one checkpoint into a folder: what to make follows from `export` params."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detops.export.fp16 import convert_fp16
from detops.export.graph import export_fp32
from detops.export.int8 import int8_source, quantize_int8
from detops.inference.meta import ModelMeta

if TYPE_CHECKING:
    import torch

    from detops.config.export import ExportParams

FP32, FP16, INT8, INT8_TRT = "model.onnx", "model.fp16.onnx", "model.int8.onnx", "model.int8-trt.onnx"


@dataclass(frozen=True)
class VariantFile:
    """A file to score: its variant name, precision, and where it is meant to run."""

    name: str
    path: Path
    precision: str
    target: str  # cpu | gpu


def write_onnx_variants(model: torch.nn.Module, meta: ModelMeta, folder: Path, params: ExportParams,
                        calibration: list[np.ndarray]) -> list[VariantFile]:
    """FP32 always; FP16 and the two INT8 flavours as `params` ask. Returns them in report order."""
    out = [VariantFile("onnx-fp32", folder / FP32, "fp32", "cpu")]
    export_fp32(model, folder / FP32, meta.image_size, params.opset, meta)
    if params.fp16:
        convert_fp16(folder / FP32, folder / FP16, replace(meta, precision="fp16"))
        out.append(VariantFile("onnx-fp16", folder / FP16, "fp16", "gpu"))
    if params.int8:
        with int8_source(folder / FP32, folder) as source:
            quantize_int8(source, folder / INT8, calibration, params.calibration_method, "cpu",
                          replace(meta, precision="int8 (u8 activations, s8 per-channel weights)"))
            out.append(VariantFile("onnx-int8", folder / INT8, "int8 u8/s8", "cpu"))
            quantize_int8(source, folder / INT8_TRT, calibration, params.calibration_method, "tensorrt",
                          replace(meta, precision="int8 (symmetric, for TensorRT)"))
            out.append(VariantFile("onnx-int8-trt", folder / INT8_TRT, "int8 s8/s8", "gpu"))
    return out


def write_engines(onnx_files: list[VariantFile], meta: ModelMeta, folder: Path, batch_sizes: list[int],
                  cache_for: dict[str, Path]) -> list[VariantFile]:
    """TensorRT engines from the FP16 and symmetric INT8 files (strongly typed: precision from the file)."""
    from detops.export.tensorrt import build_engine, engine_path
    from detops.inference.tensorrt import current_target

    target = current_target()
    sources = {"onnx-fp16": ("tensorrt-fp16", "fp16"), "onnx-int8-trt": ("tensorrt-int8", "int8 s8/s8")}
    out = []
    for source in onnx_files:
        if source.name not in sources:
            continue
        name, precision = sources[source.name]
        engine = engine_path(folder, source.path.name.removesuffix(".onnx"), target)
        build_engine(source.path, engine, replace(meta, precision=precision), batch_sizes,
                     cache_for[target.slug()])
        out.append(VariantFile(name, engine, precision, "gpu"))
    return out
