"""Score and time some export variants in a Python process of their own.

OpenVINO's runtime loaded beside torch in one long-lived process crashed that process later (a segmentation fault
in a test session that had loaded both; each alone ran clean), so the export step hands the OpenVINO files to a
fresh process, which scores each with the one scorer on the same split, times them like the others
(`detops.export.latency`, interleaved rounds among themselves) and exits. A file the runtime rejects comes back
as that file's error; a process that dies leaves every file it held rejected with the exit code and its last
output, and the other variants still ship.

    python -m detops.export.isolated REQUEST.json RESULT.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detops.workspace import Workspace


@dataclass(frozen=True)
class Job:
    """What the child needs: the workspace (root and effective params), the files (variant name -> path, and the
    label naming each in messages), the timing images and the latency settings."""

    root: str
    params: dict[str, Any]
    files: dict[str, str]
    labels: dict[str, str]
    timing: list[str]
    batch: int
    runs: int
    warmup: int
    threads: int


@dataclass(frozen=True)
class Outcome:
    """One file's score and latency, or why it could not be loaded."""

    metrics: dict[str, float | None] = field(default_factory=dict)
    latency: dict[str, float | int] | None = None
    runtime: str = "-"
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def score_in_child(ws: Workspace, files: dict[str, Path], labels: dict[str, str], timing: list[Path], batch: int,
                   runs: int, warmup: int, threads: int) -> dict[str, Outcome]:
    """Each of `files` scored and timed in a fresh process (its progress bars on this one's terminal)."""
    if not files:
        return {}
    job = Job(str(ws.root), ws.params.to_dict(), {k: str(v) for k, v in files.items()}, labels,
              [str(p) for p in timing], batch, runs, warmup, threads)
    with tempfile.TemporaryDirectory(prefix="detops-isolated-") as tmp:
        request, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        request.write_text(json.dumps(asdict(job)), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "detops.export.isolated", str(request), str(result)],
                              stdout=None, stderr=subprocess.PIPE, text=True, errors="replace", check=False)
        if done.returncode != 0 or not result.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-8:])
            why = f"the process scoring {', '.join(files)} exited with code {done.returncode}: {tail}"
            return {name: Outcome(error=why) for name in files}
        raw = json.loads(result.read_text(encoding="utf-8"))
    return {name: Outcome(**raw[name]) for name in files}


def run_job(job: Job) -> dict[str, Outcome]:
    """In the child: load, score and time every file; a DataError on load is that file's outcome."""
    from detops.config.params import Params
    from detops.errors import DataError
    from detops.evaluation.scorer import Scorer
    from detops.export.latency import measure_all
    from detops.inference.openvino_runtime import variant_settings
    from detops.inference.predictor import Predictor, load_image

    ws = Workspace.at(Path(job.root), Params.model_validate(job.params))
    scorer = Scorer.of(ws)
    outcomes: dict[str, Outcome] = {}
    loaded: dict[str, tuple[Predictor, dict[str, float | None]]] = {}
    for name, path in job.files.items():
        try:
            predictor = scorer.load(Path(path), threads=job.threads)
        except DataError as exc:
            outcomes[name] = Outcome(error=str(exc))
            continue
        metrics = scorer.score(predictor, who=job.labels[name], label=f"score {name}").metrics
        loaded[name] = predictor, metrics
    if loaded:
        predictors = {name: p for name, (p, _) in loaded.items()}
        serving = next(iter(predictors.values())).meta.deployment()
        timings = measure_all(predictors, [load_image(p) for p in job.timing], serving, job.batch, job.runs,
                              job.warmup)
        for name, (predictor, metrics) in loaded.items():
            outcomes[name] = Outcome(metrics, timings[name].to_dict(), predictor.runtime_name,
                                     variant_settings(predictor.meta.extra))
    return outcomes


def main(argv: list[str]) -> int:
    request, result = Path(argv[0]), Path(argv[1])
    job = Job(**json.loads(request.read_text(encoding="utf-8")))
    outcomes = run_job(job)
    result.write_text(json.dumps({name: asdict(o) for name, o in outcomes.items()}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
