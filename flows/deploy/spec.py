"""The deployments of a workspace, declared once. `detops deploy` applies them through Prefect's API and
`prefect_yaml` renders the same declarations for `prefect deploy`, so the two ways can never disagree.

No Prefect import here: rendering the file needs no server and stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from detops.config import Params
from detops.errors import DeployError

# Module paths, not file paths: a worker whose working directory is a workspace outside the repository imports the
# installed `flows` package. Prefect treats an entrypoint without ':' as a module path and imports it after the
# pull steps ran (prefect.flows.load_flow_from_flow_run).
RETRAIN = "flows.retrain.retrain"
DRIFT_CHECK = "flows.drift_check.drift_check"
LABELS_SYNC = "flows.labels_sync.labels_sync"
DRIFT_EVENT = "detops.drift.detected"  # flows.drift_check emits it, one per drifted batch
ACCURACY_EVENT = "detops.accuracy.dropped"  # flows.retrain emits it when a labelled share shows the champion's drop
LABELLED_EVENT = "detops.batch.labelled"  # `detops label pull` and flows.labels_sync emit it, one per labelled batch
# prefect.yaml cannot know the workspace's path; Prefect resolves this on the worker when a run starts.
WORKSPACE_PLACEHOLDER = "{{ $DETOPS_WORKSPACE }}"
TAGS = ("detops",)
# The flow-run process emits `prefect.flow-run.heartbeat` this often; the restart automation listens for silence.
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
GPUS_VARIABLE = "gpus"  # the Kubernetes pool's job variable of the nvidia.com/gpu limit (flows.deploy.kubernetes)


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: a flow, and what starts its runs (a cron, events, or a person)."""

    name: str
    entrypoint: str
    description: str
    cron: str | None = None
    timezone: str | None = None
    triggers: tuple[dict[str, Any], ...] = ()  # Prefect deployment triggers, as prefect.yaml writes them

    @property
    def trains(self) -> bool:
        """Its runs train a model: on Kubernetes they get deploy.gpus."""
        return self.entrypoint == RETRAIN


def deployment_specs(params: Params) -> tuple[DeploymentSpec, ...]:
    """Scheduled and on-demand retraining, the drift check, the retraining a drifted or newly labelled batch starts,
    and the pull of finished labels from Label Studio."""
    deploy = params.deploy
    return (
        DeploymentSpec("retrain-scheduled", RETRAIN, f"Retraining on the workspace's params.yaml, on the schedule of "
                       f"deploy.cron ({deploy.cron}, {deploy.timezone}).", deploy.cron, deploy.timezone),
        DeploymentSpec("retrain-on-demand", RETRAIN, "Retraining started from the Prefect UI or API: the fields set "
                       "in the form overlay the workspace's params.yaml; unset fields keep its values."),
        DeploymentSpec("drift-check", DRIFT_CHECK, f"Checks new data batches for drift on the schedule of "
                       f"deploy.drift_cron ({deploy.drift_cron}, {deploy.timezone}).", deploy.drift_cron,
                       deploy.timezone),
        DeploymentSpec("retrain-on-drift", RETRAIN, f"Retraining started by {DRIFT_EVENT} or {LABELLED_EVENT}: a "
                       "labelled batch joins the dataset first; an unlabelled one ends with the list of images to "
                       "label.", triggers=(batch_trigger(DRIFT_EVENT), batch_trigger(LABELLED_EVENT))),
        DeploymentSpec("labels-sync", LABELS_SYNC, f"Pulls the finished annotations of the batches pushed to Label "
                       f"Studio on the schedule of deploy.labels_cron ({deploy.labels_cron}, {deploy.timezone}); a "
                       f"batch labelled in full emits {LABELLED_EVENT}.", deploy.labels_cron, deploy.timezone),
    )


def batch_trigger(event: str) -> dict[str, Any]:
    """One run per `event` about a batch (a drifted one, a newly labelled one), with the batch as the `batch`
    parameter."""
    return {"type": "event", "enabled": True, "match": {"prefect.resource.id": "detops.batch.*"},
            "expect": [event], "posture": "Reactive", "threshold": 1, "within": 0,
            "parameters": {"batch": "{{ event.payload.batch }}"}}


def job_variables(params: Params, trains: bool = False) -> dict[str, Any]:
    """Every deployment's runs beat at deploy.heartbeat_seconds, whatever the worker's own environment says: the
    `env` job variable, which every Prefect worker type (process, Docker, Kubernetes) passes to the run. On
    Kubernetes the runs that train also get their GPU limit."""
    variables: dict[str, Any] = {"env": {HEARTBEAT_ENV: str(params.deploy.heartbeat_seconds)}}
    if trains and params.deploy.infrastructure == "kubernetes" and params.deploy.gpus:
        variables[GPUS_VARIABLE] = params.deploy.gpus
    return variables


def pull_steps(directory: str) -> list[dict[str, Any]]:
    """Runs start in the workspace, wherever the worker was started (the shape of LocalStorage's pull step)."""
    return [{"prefect.deployments.steps.set_working_directory": {"directory": directory}}]


def prefect_yaml(params: Params) -> str:
    """deployments/prefect.yaml: the same deployments for `prefect deploy --prefect-file ... --all` (process pool;
    `detops deploy` alone pins a Kubernetes pool's runs to the deployed commit)."""
    if params.deploy.infrastructure != "process":
        raise DeployError("--prefect-yaml writes the process pool's deployments; for deploy.infrastructure "
                          f"{params.deploy.infrastructure} run `detops deploy`, which clones the deployed commit")
    pool = params.deploy.work_pool
    deployments = []
    for spec in deployment_specs(params):
        entry: dict[str, Any] = {"name": spec.name, "description": spec.description, "entrypoint": spec.entrypoint,
                                 "tags": list(TAGS), "parameters": {"workspace": "."},
                                 "work_pool": {"name": pool, "job_variables": job_variables(params)}}
        if spec.cron:
            entry["schedules"] = [{"cron": spec.cron, "timezone": spec.timezone}]
        if spec.triggers:
            entry["triggers"] = list(spec.triggers)
        deployments.append(entry)
    body = {"name": "detops", "pull": pull_steps(WORKSPACE_PLACEHOLDER), "deployments": deployments}
    header = f"""\
# Prefect deployments of a detops workspace, generated from params.yaml's `deploy` section by
# `detops deploy --prefect-yaml deployments/prefect.yaml`: change params.yaml and regenerate, do not edit.
# `detops deploy` applies the same deployments and also creates the work pool, the promotion lock, the
# notifications and the automation that restarts dead runs. By hand, with PREFECT_API_URL set:
#   prefect work-pool create {pool} --type process && prefect work-pool set-concurrency-limit {pool} 1
#   prefect deploy --no-prompt --prefect-file deployments/prefect.yaml --all
#   DETOPS_WORKSPACE=/path/to/workspace prefect worker start --pool {pool}
# Runs start in $DETOPS_WORKSPACE (read by the worker), so `workspace: .` is that folder.
"""
    return header + yaml.safe_dump(body, sort_keys=False, width=110)
