"""Log a drift check as its own MLflow run (named `monitor`): the params, the verdict, each column's score and
the report files, so the history of checks sits beside the training runs it may trigger."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from detops.workspace import Workspace


def metric_key(name: str) -> str:
    """MLflow allows word characters, `-`, `.`, ` ` and `/` in a metric name; class names may hold anything."""
    return re.sub(r"[^\w\-. /]", "_", name)


def log_check(ws: Workspace, check: dict[str, Any], folder: Path) -> str:
    """One finished run per check; returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    from detops.tracking import configure, mlflow_client, provenance

    experiment_id = configure(ws)
    client = mlflow_client(ws)
    tags = {**provenance(ws, "monitor"), "detops.step": "monitor", "detops.verdict": check["verdict"],
            "detops.current": check["source"], "detops.drifted_columns": ", ".join(check["drifted_columns"])}
    run_id = client.create_run(experiment_id, run_name="monitor").info.run_id
    try:
        stamp = int(time.time() * 1000)
        params = {f"monitor.{k}": str(v) for k, v in ws.params.monitor.model_dump(mode="json").items()}
        metrics = {"images": check["images"], "skipped_images": len(check["skipped"]),
                   "drifted_columns": len(check["drifted_columns"])}
        if check["comparison"]:
            metrics["drift_share"] = check["comparison"]["share"]
            tested = [*check["comparison"]["columns"], *filter(None, [check["comparison"]["embedding"]])]
            metrics |= {metric_key(f"drift_score/{c['column']}"): c["score"] for c in tested}
        client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in metrics.items()],
                         params=[Param(k, v[:6000]) for k, v in params.items()],
                         tags=[RunTag(k, str(v)) for k, v in tags.items()])
        for path in sorted(folder.iterdir()):
            client.log_artifact(run_id, str(path), "drift")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return str(run_id)
