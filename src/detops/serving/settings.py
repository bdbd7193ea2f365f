"""What a server serves (a registry alias it follows, a fixed registered version, or a model file) and everything
else it needs, resolved once at start: the device, the threads, the limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detops.config.serve import ServeParams
from detops.errors import DataError, ParamsError
from detops.workspace import Workspace


@dataclass(frozen=True)
class ModelSource:
    """A registered model followed by alias (only an alias moves, so only it is watched), one of its versions,
    or a file (`name` is then empty)."""

    kind: Literal["alias", "version", "file"]
    ref: str  # the alias, the version number or the file's absolute path
    name: str = ""

    @property
    def follows(self) -> bool:
        return self.kind == "alias"

    @property
    def alias(self) -> str | None:
        return self.ref if self.kind == "alias" else None

    def __str__(self) -> str:
        if self.kind == "file":
            return self.ref
        return f"models:/{self.name}@{self.ref}" if self.kind == "alias" else f"models:/{self.name}/{self.ref}"


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


def parse_source(ws: Workspace, spec: str) -> ModelSource:
    """`serve.model` as a source: an alias of `mlflow.registered_model`, `models:/NAME/VERSION`,
    `models:/NAME@ALIAS` or a file (an existing path always wins, as for `detops predict`)."""
    from detops.registry.resolve import parse_reference

    reference = parse_reference(ws, spec)
    if reference is None:
        path = ws.resolve(spec)
        if not path.is_file():
            raise DataError(f"{path}: model file not found (serve.model takes a file, an alias such as champion, "
                            "models:/<name>/<version> or models:/<name>@<alias>).")
        return ModelSource("file", str(Path(path).resolve()))
    if reference.version:
        return ModelSource("version", reference.version, reference.name)
    return ModelSource("alias", str(reference.alias), reference.name)


def challenger_source(ws: Workspace, champion: ModelSource) -> ModelSource | None:
    """The alias canary and shadow traffic go to, on the champion's registered model; None when both are off."""
    serve = ws.params.serve
    if serve.canary_share == 0 and serve.shadow_share == 0:
        return None
    if champion.kind == "file":
        raise ParamsError("serve.canary_share and serve.shadow_share need a registered model (the challenger is an "
                          f"alias of it); {champion} is a file. Serve an alias such as champion, or set both to 0.")
    from detops.registry.names import check_alias

    return ModelSource("alias", check_alias(serve.challenger), champion.name)


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
    from detops.registry.resolve import Reference, resolve_version

    serve = ws.params.serve
    champion = parse_source(ws, serve.model)
    challenger = challenger_source(ws, champion)
    if champion.kind != "file":  # RegistryError naming the fix when the model, version or alias is missing
        resolve_version(connect(ws), Reference(champion.name, champion.ref if champion.kind == "version" else None,
                                               alias=champion.alias))
    gpu = False
    if serve.device != "cpu":
        from detops.inference.tensorrt import gpu_name

        gpu = gpu_name() is not None
        if serve.device == "gpu" and not gpu:
            raise ParamsError("serve.device is gpu but nvidia-smi finds no NVIDIA GPU here; use auto or cpu.")
    return ServeSettings(ws, champion, challenger, runtime, gpu, serve.threads or usable_cpus())
