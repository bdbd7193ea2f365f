"""OpenVINO on the CPU: the project's exported ONNX files, read unchanged, compiled with the precision hint their
metadata names.

An OpenVINO variant is an ONNX file named `*.openvino.onnx`: the graph of `model.onnx` or `model.int8.onnx` as
exported, its detops metadata extended by an `openvino` entry (the `INFERENCE_PRECISION_HINT`, and the CPU
capabilities that hint needs). One self-sufficient file per variant, like every other export, so the registry,
`detops serve` and the MLflow model carry and load it as they do the others. The hint is always set: OpenVINO's
default on a CPU with BF16 is bf16, not f32, which moves raw outputs. The decode stays numpy float32, as for
every runtime; torch is never imported.

A file whose hint needs a capability this CPU lacks (bf16 without BF16) runs with the f32 hint instead, which is
the `openvino-fp32` variant's computation, with a warning. Where openvino is not installed the same file runs in
ONNX Runtime (the graph is plain ONNX), with a warning.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from detops.errors import DataError
from detops.inference.meta import INPUT_NAME, METADATA_KEY, ModelMeta

log = logging.getLogger("detops.inference")

SUFFIX = ".openvino.onnx"
ENTRY = "openvino"  # key of the OpenVINO settings in ModelMeta.extra
HINTS = {"f32": (), "bf16": ("BF16",)}  # precision hint -> the OPTIMIZATION_CAPABILITIES it needs
STATIC_BATCHES = 16  # a static model per batch size up to this; larger batches share the dynamic axis


def is_openvino_file(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIX)


def variant_settings(extra: dict[str, Any]) -> dict[str, Any]:
    """The part of a model file's `ModelMeta.extra` an export row keeps: its OpenVINO settings, if any (the
    precision hint and the CPU capabilities it needs)."""
    return {k: v for k, v in extra.items() if k == ENTRY}


def openvino_settings(hint: str) -> dict[str, Any]:
    """The metadata entry of a variant compiled with `hint`."""
    if hint not in HINTS:
        raise ValueError(f"unknown OpenVINO precision hint {hint!r}; expected one of {sorted(HINTS)}")
    return {"precision_hint": hint, "requires": list(HINTS[hint])}


def openvino_installed() -> bool:
    """Whether openvino can be imported, asked without importing it (the flow's process never does:
    `detops.isolated`)."""
    import importlib.util

    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


@functools.cache
def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's `OPTIMIZATION_CAPABILITIES` of this CPU (FP32, INT8, BF16, ...); asked once per process."""
    import openvino as ov

    return tuple(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def capability_names() -> list[str]:
    """`cpu_capabilities` as JSON, for a parent that asks a child (`detops.isolated`)."""
    return list(cpu_capabilities())


class OpenVinoRuntime:
    """An ONNX file compiled by OpenVINO for the CPU, one static model per batch size (up to `STATIC_BATCHES`;
    larger batches share one model with a dynamic batch axis). Static shapes ran 1.1-1.3x faster than the dynamic
    axis at batch 1 and 8, and 1.3-1.5x over a mix of sizes 2-8 as serving's batches come
    (`benchmarks/openvino_shapes.py`, AMX Xeon, demo and BCCD models). A compile took 0.25 s (192 px) to 1.2 s
    (416 px INT8) there.

    Each compiled size holds its own copy of the weights (about 30 MiB for the 192 px demo model), so a size is
    compiled only when a batch is larger than every size compiled so far; a smaller batch runs on the sizes already
    compiled, split into them or padded up to one, whichever their measured seconds per call say is cheaper. A
    server that warms sizes 1 and 8 thus holds two models, not eight, and a batch of 2 runs as two of 1, a batch of
    7 as one of 8.

    Safe to call from several threads (MLflow's model server does): an infer request runs one inference at a time
    and its output tensor is overwritten by the next, so each thread gets its own requests from the shared
    compiled models."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import openvino as ov

        self.path = path
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises its own untyped errors for unreadable files
            raise DataError(f"{path}: OpenVINO cannot read this model ({_reason(exc)}). The file is corrupt or "
                            "truncated: re-run `detops export`.") from None
        self.meta = self._read_meta()
        self.hint = self._usable_hint(self.meta.extra.get(ENTRY) or {})
        self._config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._compiled: dict[int | None, Any] = {1: self._compile(1)}  # now: a file OpenVINO cannot compile fails
        self._compile_lock = threading.Lock()                            # at load, not at the first image
        self._seconds: dict[int, float] = {}  # static size -> seconds per call (a moving average, first call left
        self._ran: set[int] = set()            # out: it allocates)
        self._requests = threading.local()
        self.name = f"openvino {ov.__version__.split('-')[0]} (CPU, {self.hint})"

    def _read_meta(self) -> ModelMeta:
        if not self._model.has_rt_info(["framework", METADATA_KEY]):
            raise DataError(f"{self.path}: no detops metadata in this ONNX file; export it with `detops export`.")
        return ModelMeta.from_json(self._model.get_rt_info(["framework", METADATA_KEY]).astype(str), str(self.path))

    def _usable_hint(self, settings: dict[str, Any]) -> str:
        hint = str(settings.get("precision_hint", "f32"))
        if hint not in HINTS:
            raise DataError(f"{self.path}: unknown OpenVINO precision hint {hint!r} in its metadata; re-export it.")
        missing = [c for c in settings.get("requires", HINTS[hint]) if c not in cpu_capabilities()]
        if missing:
            log.warning("%s: its %s precision hint needs %s, which this CPU lacks (it has %s); running it with the "
                        "f32 hint, as the openvino-fp32 variant.", self.path.name, hint, ", ".join(missing),
                        ", ".join(cpu_capabilities()))
            return "f32"
        return hint

    def _compile(self, batch: int | None) -> Any:
        """The compiled model for a static `batch`, or for any batch size (None)."""
        model = self._model.clone()
        size = self.meta.image_size
        model.reshape({INPUT_NAME: [-1 if batch is None else batch, 3, size, size]})
        try:
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as exc:
            raise DataError(f"{self.path}: OpenVINO cannot compile this model ({_reason(exc)}); "
                            "re-run `detops export`.") from None
        return compiled

    def _request(self, batch: int | None) -> Any:
        """This thread's infer request for a static `batch` (None: any size), the model compiled once."""
        mine: dict[int | None, Any] = self._requests.__dict__.setdefault("by_batch", {})
        if batch not in mine:
            with self._compile_lock:
                if batch not in self._compiled:
                    self._compiled[batch] = self._compile(batch)
            mine[batch] = self._compiled[batch].create_infer_request()
        return mine[batch]

    @property
    def static_batches(self) -> tuple[int, ...]:
        """The batch sizes compiled so far with a static shape (a batch larger than all of them compiles its own)."""
        return tuple(sorted(b for b in list(self._compiled) if b is not None))

    def plan(self, n: int) -> list[int]:
        """The static sizes a batch of `n` runs as: `n` itself when compiled or larger than every compiled size
        (it compiles), else the cheaper of splitting into compiled sizes (largest first) and padding up to the
        smallest compiled size above `n`, by the measured seconds per call."""
        sizes = sorted(b for b in list(self._compiled) if b is not None)  # a copy: another thread may compile
        if n in sizes or n > sizes[-1]:
            return [n]
        split, left = [], n
        for size in reversed(sizes):
            while size <= left:
                split.append(size)
                left -= size
        pad = min(b for b in sizes if b > n)
        if left or (pad in self._seconds and all(b in self._seconds for b in split)
                    and self._seconds[pad] < sum(self._seconds[b] for b in split)):
            return [pad]
        return split  # exact, and cheaper or not measured yet

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) > STATIC_BATCHES:
            return self._infer(None, batch)
        outputs, start = [], 0
        for size in self.plan(len(batch)):
            chunk = batch[start:start + size]
            if len(chunk) < size:  # padded: the extra images are blank and their answers dropped
                chunk = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
            outputs.append(self._infer(size, chunk)[:len(batch) - start])
            start += size
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _infer(self, size: int | None, batch: np.ndarray) -> np.ndarray:
        request = self._request(size)
        started = time.perf_counter()
        request.infer({0: batch})
        if size in self._ran:
            took = time.perf_counter() - started
            self._seconds[size] = 0.8 * self._seconds.get(size, took) + 0.2 * took
        elif size is not None:
            self._ran.add(size)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the tensor is reused


def _reason(exc: Exception) -> str:
    """The line of an OpenVINO error that says what went wrong (its first lines name C++ source files)."""
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not line.startswith(("Exception from ", "Check '"))]
    return lines[-1][:300] if lines else type(exc).__name__
