"""TensorRT engines: the sidecar that says what an engine was built for, and a runtime to execute one.

An engine only runs on the GPU model and TensorRT version that built it; the sidecar json is checked before
anything is deserialised, so a wrong engine is a clear error (and the check is testable without a GPU).
"""

from __future__ import annotations

import functools
import json
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detops.errors import DataError
from detops.inference.meta import INPUT_NAME, OUTPUT_NAME, ModelMeta


@dataclass(frozen=True)
class EngineTarget:
    """What an engine is bound to: the GPU model and the TensorRT version."""

    gpu: str | None
    tensorrt: str | None

    def slug(self) -> str:
        """File-name part: `trt10.13.0-nvidia-h100-80gb-hbm3`."""
        gpu = "".join(c if c.isalnum() else "-" for c in (self.gpu or "nogpu").lower()).strip("-")
        while "--" in gpu:
            gpu = gpu.replace("--", "-")
        return f"trt{self.tensorrt or 'none'}-{gpu}"


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(engine.suffix + ".json")


def write_sidecar(engine: Path, meta: ModelMeta, target: EngineTarget, batch_sizes: list[int]) -> Path:
    from detops.atomic import write_json

    path = sidecar_path(engine)
    write_json(path, {"detops": meta.to_dict(), "tensorrt": {"version": target.tensorrt, "gpu": target.gpu,
                                                                "batch_sizes": batch_sizes}})
    return path


def read_sidecar(engine: Path) -> tuple[ModelMeta, EngineTarget, list[int]]:
    path = sidecar_path(engine)
    if not path.is_file():
        raise DataError(f"{engine}: its sidecar {path.name} is missing; an engine cannot be run without it "
                        "(it names the classes and the GPU it was built for). Re-run `detops export`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        trt = data["tensorrt"]
        target = EngineTarget(gpu=trt.get("gpu"), tensorrt=trt.get("version"))
        return ModelMeta.from_dict(data["detops"], str(path)), target, [int(b) for b in trt["batch_sizes"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a detops engine sidecar ({exc!r}).") from None


@functools.cache
def current_target() -> EngineTarget:
    """The GPU and TensorRT version of this machine (None where absent); asked once per process (`nvidia-smi`
    takes a while, and an export needs the answer for its plan, every engine's name, sidecar and load)."""
    try:
        import tensorrt

        version: str | None = str(tensorrt.__version__)
    except ImportError:
        version = None
    return EngineTarget(gpu=gpu_name(), tensorrt=version)


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    name = out.stdout.strip().splitlines()
    return name[0].strip() if out.returncode == 0 and name else None


def check_compatible(engine: Path, built_for: EngineTarget, here: EngineTarget) -> None:
    """An engine runs only where it was built: same GPU model, same TensorRT version."""
    problems = []
    if built_for.gpu != here.gpu:
        problems.append(f"it was built for GPU {built_for.gpu!r}, this machine has {here.gpu or 'no NVIDIA GPU'}")
    if built_for.tensorrt != here.tensorrt:
        problems.append(f"it was built with TensorRT {built_for.tensorrt}, this machine has "
                        f"{'TensorRT ' + here.tensorrt if here.tensorrt else 'no TensorRT'}")
    if problems:
        raise DataError(f"{engine}: cannot run this engine: {'; '.join(problems)}. Rebuild it here from the ONNX "
                        "file (`detops export` with export.tensorrt=auto) or use the ONNX file itself.")


class TensorRTRuntime:
    """A serialised engine executed with TensorRT 10+ name-based I/O; buffers are torch CUDA tensors. One execution
    context holds the shapes and addresses of the run in progress, so calls from several threads take turns."""

    def __init__(self, engine: Path, meta: ModelMeta, batch_sizes: list[int]) -> None:
        import tensorrt as trt
        import torch

        self.torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(engine.read_bytes())
        if self.engine is None:
            raise DataError(f"{engine}: TensorRT could not deserialise this engine (corrupt or truncated).")
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()
        self.max_batch = max(batch_sizes)
        self.name = f"tensorrt {trt.__version__} ({torch.cuda.get_device_name(0)})"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with self._lock:
            outputs = [self._run(torch.from_numpy(batch[i : i + self.max_batch]).cuda())
                       for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(outputs)

    def _run(self, images: Any) -> np.ndarray:
        torch = self.torch
        self.context.set_input_shape(INPUT_NAME, tuple(images.shape))
        shape = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        out = torch.empty(shape, dtype=torch.float32, device="cuda")
        images = images.contiguous()
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return np.asarray(out.cpu().numpy())


def open_engine(engine: Path) -> tuple[TensorRTRuntime, ModelMeta]:
    meta, built_for, batch_sizes = read_sidecar(engine)
    check_compatible(engine, built_for, current_target())
    return TensorRTRuntime(engine, meta, batch_sizes), meta
