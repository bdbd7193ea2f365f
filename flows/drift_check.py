"""The drift flow: on a schedule, check every new complete batch in the landing folder against the training
data (Evidently, `detops monitor`) and, on drift, emit the Prefect event `detops.drift.detected`.

The `retrain-on-drift` deployment is triggered by that event with the batch as a parameter. The monitor's
ledger records each batch checked, so a batch is checked and announced once, however many ticks see it. A tick
checks its new batches in one `monitor` task (the step task `tasks` builds for every verb), so the reference is
loaded once however many batches arrived, and ends by rebuilding the run page (`reports/index.html`).
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger

from detops.locking import workspace_lock
from detops.monitoring.loopstate import loop_state
from detops.workspace import Workspace
from flows.deploy.spec import DRIFT_EVENT
from tasks import run_step


def check_of(ws: Workspace, batch: str) -> dict[str, Any]:
    check = ws.output("monitor", "batches") / batch / "check.json"
    return dict(json.loads(check.read_text(encoding="utf-8")))


def announce(ws: Workspace, check: dict[str, Any]) -> None:
    """One event per drifted batch; its payload is what retraining and a person need."""
    from prefect.events import emit_event

    batch = str(check["batch"])
    emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": f"detops.batch.{batch}", "prefect.resource.name": batch},
        payload={"batch": batch, "workspace": str(ws.root), "drifted_columns": check["drifted_columns"],
                 "labelled": check["labelled"], "images": check["images"], "report": check["reports"].get("html")},
    )


@flow(name="drift_check")
def drift_check(workspace: str = ".") -> dict[str, Any]:
    """Check the new complete batches; announce the drifted ones. Returns each batch's verdict."""
    from detops.monitoring.batches import new_batches
    from detops.reporting.page import build_run_page
    from flows.retrain import workspace_for

    ws = workspace_for(workspace, None, [])
    logger = get_run_logger()
    with workspace_lock(ws.root), loop_state(ws):
        batches = new_batches(ws)
        if not batches:
            logger.info("no new complete batch in %s: nothing to check", ws.params.monitor.landing)
            return {}
        verdicts = {}
        run_step(ws, "monitor", batches=[batch.name for batch in batches])  # one reference load for them all
        logger.info("run report (offline page): %s", ws.relative(build_run_page(ws)))
        for batch in batches:
            check = check_of(ws, batch.name)
            verdicts[batch.name] = {"verdict": check["verdict"], "drifted_columns": check["drifted_columns"]}
            if check["verdict"] == "drift":
                announce(ws, check)
                logger.warning("batch %s drifted on %s: %s emitted", batch.name,
                               ", ".join(check["drifted_columns"]), DRIFT_EVENT)
    return verdicts


if __name__ == "__main__":
    drift_check()
