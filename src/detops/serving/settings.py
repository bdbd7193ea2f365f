"""What a server serves (a registry alias it follows, a fixed registered version, or a model file) and everything
else it needs, resolved once at start: the device, the threads, the limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from detops.config.serve import ServeParams
from detops.errors import DataError, ParamsError
from detops.registry.resolve import Reference, parse_reference
from detops.workspace import Workspace

Source = Reference | Path  # a registered model by alias (only an alias moves: only it is followed) or version; a file


@dataclass(frozen=True)
class ServeSettings:
    ws: Workspace
    serve: ServeParams
    champion: Source
    challenger: Reference | None  # None: canary and shadow are off
    runtime: Path  # this run's folder: the downloads
    gpu: bool  # serve the GPU variant, where it can run here
    threads: int  # ONNX Runtime / OpenVINO threads, and image decoding threads
    score_threshold: float  # detections are kept from predict.score_threshold, as `detops predict` keeps them


def parse_source(ws: Workspace, spec: str) -> Source:
    """`serve.model` as a source: an alias of `mlflow.registered_model`, `models:/NAME/VERSION`,
    `models:/NAME@ALIAS` or a file (an existing path always wins, as for `detops predict`)."""
    reference = parse_reference(ws, spec)
    if reference is not None:
        return reference
    path = ws.resolve(spec)
    if not path.is_file():
        raise DataError(f"{path}: model file not found (serve.model takes a file, an alias such as champion, "
                        "models:/<name>/<version> or models:/<name>@<alias>).")
    return Path(path).resolve()


def challenger_source(ws: Workspace, champion: Source) -> Reference | None:
    """The alias canary and shadow traffic go to, on the champion's registered model; None when both are off."""
    serve = ws.params.serve
    if serve.canary_share == 0 and serve.shadow_share == 0:
        return None
    if isinstance(champion, Path):
        raise ParamsError("serve.canary_share and serve.shadow_share need a registered model (the challenger is an "
                          f"alias of it); {champion} is a file. Serve an alias such as champion, or set both to 0.")
    from detops.registry.names import check_alias

    return Reference(champion.name, alias=check_alias(serve.challenger))


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
    from detops.registry.client import connect
    from detops.registry.resolve import resolve_version

    serve = ws.params.serve
    champion = parse_source(ws, serve.model)
    challenger = challenger_source(ws, champion)
    if isinstance(champion, Reference):  # RegistryError naming the fix when the model, version or alias is missing
        resolve_version(connect(ws), champion)
    gpu = False
    if serve.device != "cpu":
        from detops.inference.tensorrt import gpu_name

        gpu = gpu_name() is not None
        if serve.device == "gpu" and not gpu:
            raise ParamsError("serve.device is gpu but nvidia-smi finds no NVIDIA GPU here; use auto or cpu.")
    return ServeSettings(ws, serve, champion, challenger, runtime, gpu, serve.threads or usable_cpus(),
                         ws.params.predict.score_threshold)
