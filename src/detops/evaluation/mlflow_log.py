"""Log an evaluation into the training run recorded by `train`, so one MLflow run holds the whole story.

Uses MlflowClient with an explicit run id rather than the fluent active run: evaluation must not depend
on (or end) whatever run a caller, such as a Prefect flow, has open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from detops.workspace import Workspace


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    reused: bool  # True when the evaluation joined the run recorded by `train`
    note: str


def log_evaluation(
    ws: Workspace, metrics: dict[str, float | None], artifacts: dict[str, list[Path]]
) -> LoggedRun:
    """Log defined metrics (None = undefined, left out) and files under their artifact folders."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    from detops.tracking import configure, mlflow_client, provenance, read_run_id, run_record, tracking_uri

    experiment_id = configure(ws)
    client = mlflow_client(ws)
    recorded = read_run_id(ws)
    reused = False
    if recorded:
        try:
            client.get_run(recorded)
            reused = True
        except MlflowException:
            reused = False
    if reused:
        run_id, note = str(recorded), f"logged into the training run {recorded}"
    else:
        tags = {**provenance(ws, "evaluate"), "detops.step": "evaluate"}
        run = client.create_run(experiment_id, run_name="evaluate", tags=tags)
        run_id = run.info.run_id
        why = (f"the run {recorded} recorded in {ws.relative(run_record(ws))} is not in {tracking_uri(ws)}"
               if recorded else f"no training run recorded in {ws.relative(run_record(ws))}")
        note = f"logged into a new MLflow run {run_id} ({why})"
    try:
        if not reused:  # MLflow params never change once logged: a training run keeps its own
            params = {f"evaluate.{k}": str(v) for k, v in ws.params.evaluate.model_dump().items()}
            client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        stamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items() if v is not None])
        for folder, files in artifacts.items():
            for path in files:
                client.log_artifact(run_id, str(path), folder)
    except BaseException:
        if not reused:
            client.set_terminated(run_id, "FAILED")
        raise
    if not reused:
        client.set_terminated(run_id)
    return LoggedRun(run_id=run_id, reused=reused, note=note)
