"""Every export variant timed in one fresh process, the OpenVINO files scored there too.

The deployable CPU variant is the fastest accepted one, so its timings must be comparable: all variants (torch,
ONNX Runtime, OpenVINO, TensorRT where built) are loaded in the same process and timed in the same interleaved rounds
(`detops.export.latency`). That process is a child (`detops.isolated`): the export step's own process never loads
an OpenVINO file, so the child also scores those with the one scorer on the same split. A file a runtime rejects
comes back as that file's error; a child that dies leaves every file it was to score rejected, and every variant
untimed, with the exit code and its last output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detops.inference.decode import Thresholds
from detops.isolated import IsolatedProcessDied, child_workspace, run_isolated, workspace_args
from detops.workspace import Workspace


@dataclass(frozen=True)
class Outcome:
    """One file's latency and, where the child scored it, its metrics; or why it could not be loaded."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    latency: dict[str, float | int] | None = None
    runtime: str = "-"
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def measure_in_child(ws: Workspace, files: dict[str, Path], scored: dict[str, str], timing: list[Path],
                     serving: Thresholds, batch: int, runs: int, warmup: int, threads: int) -> dict[str, Outcome]:
    """Each of `files` (variant name -> path) loaded and timed in one fresh process with the `serving` thresholds,
    those named in `scored` (name -> the label naming the file in messages) scored there too."""
    if not files:
        return {}
    try:
        raw = run_isolated(measure, **workspace_args(ws), files={k: str(v) for k, v in files.items()},
                           scored=scored, timing=[str(p) for p in timing], serving=serving.to_dict(), batch=batch,
                           runs=runs, warmup=warmup, threads=threads)
    except IsolatedProcessDied as exc:
        return {name: Outcome(error=str(exc)) for name in files}
    return {name: Outcome(**raw[name]) for name in files}


def measure(root: str, params: dict[str, Any], files: dict[str, str], scored: dict[str, str], timing: list[str],
            serving: dict[str, Any], batch: int, runs: int, warmup: int, threads: int) -> dict[str, dict[str, Any]]:
    """In the child: load every file, score those in `scored`, time all loaded ones together; a DataError on load is
    that file's outcome."""
    from detops.errors import DataError
    from detops.evaluation.scorer import Scorer
    from detops.export.latency import measure_all
    from detops.inference.openvino_runtime import variant_settings
    from detops.inference.predictor import Predictor, load_image

    scorer = Scorer.of(child_workspace(root, params))
    outcomes: dict[str, Outcome] = {}
    loaded: dict[str, tuple[Predictor, dict[str, float | None]]] = {}
    for name, path in files.items():
        try:
            predictor = scorer.load(Path(path), threads=threads)
        except DataError as exc:
            outcomes[name] = Outcome(error=str(exc))
            continue
        metrics = scorer.score(predictor, who=scored[name], label=f"score {name}").metrics if name in scored else {}
        loaded[name] = predictor, metrics
    if loaded:
        predictors = {name: p for name, (p, _) in loaded.items()}
        timings = measure_all(predictors, [load_image(p) for p in timing], Thresholds(**serving), batch, runs, warmup)
        for name, (predictor, metrics) in loaded.items():
            outcomes[name] = Outcome(metrics, timings[name].to_dict(), predictor.runtime_name,
                                     variant_settings(predictor.meta.extra))
    return {name: asdict(o) for name, o in outcomes.items()}
