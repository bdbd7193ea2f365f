"""The engines a predictor can sit on. Each maps a float32 NCHW batch in [0, 1] to the raw `[B, N, 5 + C]`.

Only the checkpoint runtime imports torch; the ONNX runtime needs onnxruntime and numpy alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from detops.errors import DataError
from detops.inference.meta import INPUT_NAME, METADATA_KEY, ModelMeta


class Runtime(Protocol):
    """A model behind a uniform call; `name` says what runs it (for reports)."""

    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRuntime:
    """A detops checkpoint in torch eager mode (EMA weights), on CUDA when there is one."""

    def __init__(self, checkpoint: Path, device: str = "auto", threads: int = 0) -> None:
        import torch

        from detops.training.predict import load_detector

        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model, self.checkpoint_meta = load_detector(checkpoint, self.device)
        self.name = f"torch {torch.__version__} ({self.device.type})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            raw = self.model(torch.from_numpy(batch).to(self.device, non_blocking=True))
        return np.asarray(raw.float().cpu().numpy())


class OnnxRuntime:
    """An ONNX file of any precision in ONNX Runtime; CUDA when onnxruntime-gpu offers it and it is asked for."""

    def __init__(self, path: Path, device: str = "auto", threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wants_gpu = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_gpu else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise DataError(f"{path}: ONNX Runtime cannot load this model ({_first_line(exc)}). "
                            "The file is corrupt or truncated: re-run `detops export`.") from None
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime {ort.__version__} ({self.provider.removesuffix('ExecutionProvider')})"

    def metadata(self, where: Path) -> ModelMeta:
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise DataError(f"{where}: no detops metadata in this ONNX file; export it with `detops export`.")
        return ModelMeta.from_json(props[METADATA_KEY], str(where))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (raw,) = self.session.run(None, {INPUT_NAME: batch})
        return np.asarray(raw, dtype=np.float32)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

