"""INT8 ONNX by ONNX Runtime static quantization (QDQ), calibrated on letterboxed train images.

Two flavours from one calibration set:
- `cpu`: uint8 activations, int8 per-channel weights. On x86 with VNNI/AMX this is what ONNX Runtime's
  integer kernels run fastest (symmetric int8 activations measured 2x *slower* than FP32 here).
- `tensorrt`: symmetric int8 activations and weights (zero point 0), which TensorRT's explicit
  quantization requires.
Every op before the decode tail is quantized; the tail (exp, scale, concat of pixels with logits) is
excluded by node name and stays float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detops.export.graph import decode_tail, set_metadata
from detops.inference.meta import INPUT_NAME, ModelMeta

Flavour = Literal["cpu", "tensorrt"]
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Calibration images whose activations ONNX Runtime holds at once: its calibrators keep every intermediate tensor
# of the images of one collect before folding them into ranges or histograms (64 images of BCCD at 416 px: 15 GB).
CALIBRATION_CHUNK = 8


class _RankOneScales(logging.Filter):
    """Drops ONNX Runtime's per-node warning that a rank-1 weight (a GroupNorm scale, quantized per tensor
    instead) has no channel axis: expected here, and dozens of lines long."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


class _Batches:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed batches, with the range selection its
    strided calibration uses (`CalibStridedMinMax`, despite the name a loop of collects for any method)."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = batches
        self._iter: Iterator[np.ndarray] = iter(batches)

    def __len__(self) -> int:
        return len(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._batches[start_index:end_index])


def calibration_stride(batches: int, chunk: int) -> int:
    """The batches per collect: the largest divisor of `batches` up to `chunk` (ONNX Runtime refuses a remainder)."""
    return max(d for d in range(1, max(1, min(chunk, batches)) + 1) if batches % d == 0)


@dataclass(frozen=True)
class Int8Source:
    """The FP32 file as both INT8 flavours start from it: shape-inferred once, its decode tail found once."""

    path: Path
    tail: list[str]


@contextmanager
def int8_source(src: Path, work_dir: Path) -> Iterator[Int8Source]:
    """`quant_pre_process` of `src` and the decode-tail search, once per export; the prepared file is removed after."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = work_dir / f"{src.stem}.pre.onnx"
    try:
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        yield Int8Source(prepared, decode_tail(onnx.load(str(prepared))))
    finally:
        prepared.unlink(missing_ok=True)


def quantize_int8(source: Int8Source, dst: Path, batches: list[np.ndarray], method: str, flavour: Flavour,
                  meta: ModelMeta, chunk: int = CALIBRATION_CHUNK) -> None:
    """Static QDQ quantization of the prepared FP32 `source` into `dst`, calibrated on `batches` (float32 NCHW in
    [0, 1]), at most `chunk` batches' activations held at once."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    symmetric = flavour == "tensorrt"
    extra: dict[str, Any] = {"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                             "CalibStridedMinMax": calibration_stride(len(batches), chunk)}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    quiet = _RankOneScales()  # per-channel is asked for every weight: ORT warns per rank-1 GroupNorm scale
    logging.getLogger().addFilter(quiet)
    try:
        quantize_static(
            str(source.path), str(dst), _Batches(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            nodes_to_exclude=source.tail,
            extra_options=extra,
        )
    finally:
        logging.getLogger().removeFilter(quiet)
    quantized = onnx.load(str(dst))
    set_metadata(quantized, meta)
    onnx.checker.check_model(quantized)
    onnx.save(quantized, str(dst))
