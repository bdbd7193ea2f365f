"""FP16 ONNX: float16 weights and math, float32 inputs and outputs, the box decode kept in float32.

ONNX Runtime's CPU provider has no float16 convolution on x86, so this file is the GPU artifact (CUDA or
TensorRT); on a CPU-only machine it is measured through the CPU provider and reported as such.
"""

from __future__ import annotations

from pathlib import Path

from detops.export.graph import decode_tail, set_metadata
from detops.inference.meta import ModelMeta


def convert_fp16(src: Path, dst: Path, meta: ModelMeta) -> None:
    import onnx
    import onnxslim
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    half = onnxslim.slim(convert_float_to_float16(model, keep_io_types=True, node_block_list=decode_tail(model)))
    set_metadata(half, meta)
    onnx.checker.check_model(half)
    onnx.save(half, str(dst))
