"""Everything the server needs, resolved once at start: the sources, the device, the threads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detops.config.serve import ServeParams
from detops.errors import ParamsError
from detops.serving.source import ModelSource, challenger_source, parse_source
from detops.workspace import Workspace


@dataclass(frozen=True)
class ServeSettings:
    ws: Workspace
    champion: ModelSource
    challenger: ModelSource | None  # None: canary and shadow are off
    runtime: Path  # this run's folder: models/ (downloads)
    gpu: bool  # serve the GPU variant, where it can run here
    threads: int  # ONNX Runtime / OpenVINO threads, and image decoding threads

    @property
    def serve(self) -> ServeParams:
        return self.ws.params.serve

    @property
    def score_threshold(self) -> float:
        """Detections are kept from the serving threshold, as `detops predict` keeps them."""
        return self.ws.params.predict.score_threshold

    @property
    def models_dir(self) -> Path:
        return self.runtime / "models"

    @property
    def max_body_bytes(self) -> int:
        return int(self.serve.max_body_mb * 1024 * 1024)


def capture_line(ws: Workspace) -> str:
    """What `detops serve` says at start about capture: off, or the share and the folder its batches go to."""
    serve = ws.params.serve
    if serve.capture_share <= 0:
        return "capture: off (serve.capture_share is 0; no served image is kept for the drift check)"
    return (f"capture: on, {serve.capture_share:.0%} of requests (serve.capture_share) with the champion's answers, "
            f"in batches of {serve.capture_batch_size} image(s) or {serve.capture_max_minutes:g} min, into "
            f"{ws.resolve(ws.params.monitor.landing)}")


def settings_for(ws: Workspace, runtime: Path) -> ServeSettings:
    """Parse `serve.model`, check that a registry reference names something that exists (a typo fails here, not
    at the first poll), pick the device and the threads."""
    from detops.cpus import usable_cpus

    serve = ws.params.serve
    champion = parse_source(ws, serve.model)
    challenger = challenger_source(ws, champion)
    if champion.kind != "file":
        check_reference(ws, champion)
    gpu = False
    if serve.device != "cpu":
        from detops.inference.tensorrt import gpu_name

        gpu = gpu_name() is not None
        if serve.device == "gpu" and not gpu:
            raise ParamsError("serve.device is gpu but nvidia-smi finds no NVIDIA GPU here; use auto or cpu.")
    threads = serve.threads or usable_cpus()
    return ServeSettings(ws, champion, challenger, runtime, gpu, threads)


def check_reference(ws: Workspace, source: ModelSource) -> str:
    """The version `source` names now (RegistryError naming the fix when the model, version or alias is missing)."""
    from detops.registry.client import connect
    from detops.registry.resolve import Reference, resolve_version

    reference = Reference(source.name, alias=source.alias) if source.follows else Reference(source.name, source.ref)
    return resolve_version(connect(ws), reference)
