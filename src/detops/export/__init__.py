"""Turning a checkpoint into deployable files: ONNX FP32, FP16 and INT8 (QDQ), TensorRT engines."""
