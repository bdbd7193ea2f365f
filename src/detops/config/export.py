from __future__ import annotations

from pydantic import Field

from detops.config.base import Section


class ExportParams(Section):
    """ONNX export, INT8/FP16 quantization and a TensorRT engine (lands in a later release)."""

    opset: int = Field(17, ge=11, le=23, description="ONNX opset.")
    fp16: bool = Field(True, description="Also write an FP16 ONNX model.")
    int8: bool = Field(True, description="Also write a static INT8 ONNX model (ONNX Runtime quantization).")
    calibration_images: int = Field(64, ge=1, description="Images from train used to calibrate INT8.")
    tensorrt: bool = Field(False, description="Build a TensorRT engine (needs an NVIDIA GPU and tensorrt).")
