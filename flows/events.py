"""Prefect events detops emits, for automations to act on: `detops.promotion.promoted` or
`detops.promotion.rejected`, one per promote step of the retraining flow (notifications, a deployment of the new
champion), `detops.accuracy.dropped` when the champion's accuracy on a labelled batch's share fell (notified; it
starts nothing: that batch's retraining is the run that found it), and `detops.batch.labelled` for a batch pulled
from Label Studio in full (it starts `retrain-on-drift`; labels-sync repeats it every tick until the batch is
accepted, so a lost event costs a tick)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.steps.result import StepResult
from detops.workspace import Workspace
from flows.deploy.spec import ACCURACY_EVENT, LABELLED_EVENT

if TYPE_CHECKING:
    from detops.labeling.pull import PullResult


def emit_promotion_event(ws: Workspace, result: StepResult) -> None:
    """Announce the promote step's decision, read from the report it wrote (its output `decision` in the step
    graph, reports/promotion.json).

    The resource is the registered model; inside a flow run Prefect relates the event to the run, its flow and its
    deployment, so an automation can link back to the run.
    """
    from prefect.events import emit_event

    report = json.loads(ws.resolve(result.outputs["decision"]).read_text(encoding="utf-8"))
    decision = report["decision"]
    model = report["model"]
    emit_event(
        event=f"detops.promotion.{'promoted' if decision['promote'] else 'rejected'}",
        resource={"prefect.resource.id": f"detops.model.{model}", "prefect.resource.name": model},
        payload=promotion_payload(report),
    )


def promotion_payload(report: dict[str, Any]) -> dict[str, Any]:
    """What a notification needs to say why: versions, the metric, both values and the bar the candidate missed."""
    decision = report["decision"]
    keys = ("metric", "candidate_value", "champion_value", "threshold", "reason")
    return {"model": report["model"], "version": report["version"], "model_uri": report["model_uri"],
            "run_id": report["run_id"], "champion_version": report["champion_version"],
            **{key: decision[key] for key in keys}}


def emit_labelled_event(ws: Workspace, result: PullResult) -> None:
    """Announce a batch pulled from Label Studio: `retrain-on-drift` takes the labelled batch as any labelled one.

    The resource is the labelled batch (`detops.batch.<name>`, matched as the drift event is); the payload names the
    unlabelled batch it came from and the Label Studio project.
    """
    from prefect.events import emit_event

    assert result.labelled is not None, "only a written labelled batch is announced"
    emit_event(
        event=LABELLED_EVENT,
        resource={"prefect.resource.id": f"detops.batch.{result.labelled}", "prefect.resource.name": result.labelled},
        payload={"batch": result.labelled, "from_batch": result.batch, "workspace": str(ws.root),
                 "images": result.images, "boxes": result.boxes, "skipped": result.skipped,
                 "label_studio_project": result.project},
    )


def emit_accuracy_event(ws: Workspace, report: Path | None) -> bool:
    """Announce the accuracy drop the batch's production report (`detops.monitoring.production`) found, if any;
    whether it did. The resource is the registered model, as for the promotion events."""
    from prefect.events import emit_event

    if report is None:
        return False
    found = json.loads(report.read_text(encoding="utf-8"))
    if not found["alarm"]:
        return False
    model = ws.params.mlflow.registered_model
    interval = found["interval"]
    emit_event(
        event=ACCURACY_EVENT,
        resource={"prefect.resource.id": f"detops.model.{model}", "prefect.resource.name": model},
        payload={"model": model, "version": found["version"], "batch": found["batch"], "map": found["map"],
                 "map_50": found["map_50"], "interval_low": interval[0], "interval_high": interval[1],
                 "images": found["images"], "test_map": found["test_map"], "reason": "; ".join(found["alarm"]),
                 "workspace": str(ws.root)},
    )
    return True
