from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class ExportParams(Section):
    """ONNX export (FP32, FP16, INT8), OpenVINO and TensorRT variants, an accuracy gate and a latency table
    (`detops export`)."""

    opset: int = Field(17, ge=13, le=21, description="ONNX opset of the exported graph.")
    fp16: bool = Field(True, description="Also write an FP16 ONNX model (the GPU file; float32 I/O and box decode).")
    int8: bool = Field(True, description="Also write static INT8 QDQ ONNX models (ONNX Runtime quantization).")
    calibration_images: int = Field(
        64, ge=1, description="Train images that calibrate INT8 (fewer in train: all are used, with a warning)."
    )
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field(
        "percentile", description="How INT8 activation ranges are set from the calibration images (percentile "
        "99.999 clips outliers: on BCCD it kept both INT8 files within 0.01 mAP, minmax lost 0.015 on TensorRT's)."
    )
    tensorrt: bool | Literal["auto"] = Field(
        "auto", description="TensorRT engines: auto = where TensorRT and an NVIDIA GPU exist; true = required."
    )
    openvino: bool | Literal["auto"] = Field(
        "auto", description="OpenVINO CPU variants (the FP32 and INT8 ONNX files read unchanged, f32 precision "
        "hint; bf16 where the CPU has BF16), scored and timed in a process of their own: auto = where openvino is "
        "installed (the `openvino` extra); true = required. OpenVINO running the INT8 file measured 1.5-3x faster "
        "than ONNX Runtime FP32 on CPUs."
    )
    batch_sizes: list[int] = Field(
        [1, 8], min_length=1, description="Batch sizes served: TensorRT profile range; the largest is "
        "benchmarked, and the deployable variant is the fastest accepted one per image at that batch."
    )
    max_map_drop: float = Field(
        0.01, ge=0, le=1, description="Largest test/map drop (absolute) a variant may show against the checkpoint."
    )
    threads: int = Field(0, ge=0, description="CPU threads for torch, ONNX Runtime and OpenVINO alike; 0 = one "
                         "per core.")
    latency_runs: int = Field(30, ge=3, description="Timed runs per latency figure (after warmup_runs).")
    warmup_runs: int = Field(5, ge=0, description="Untimed runs before timing.")
