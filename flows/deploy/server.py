"""`detops deploy`: put the work pool, the promotion lock, the deployments and the notifications of a workspace on
the Prefect server PREFECT_API_URL names. Every call converges on params.yaml, so running it again is safe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, cast

from detops.errors import DeployError
from flows.deploy.spec import TAGS, DeploymentSpec, deployment_specs, job_variables

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

    from detops.config import Params
    from detops.workspace import Workspace


def deploy(ws: Workspace) -> list[str]:
    """Apply everything; returns one line per object for the CLI to print."""
    from prefect import get_client

    from flows.deploy.notify import configure_notifications
    from flows.deploy.restart import ensure_restart

    params = ws.params
    kubernetes = params.deploy.infrastructure == "kubernetes"
    if kubernetes and params.promote.lock != "prefect":
        raise DeployError("deploy.infrastructure kubernetes needs promote.lock: prefect in params.yaml: each run is "
                          "a pod of its own, where a file lock holds nobody else back")
    lines = [f"Prefect server: {server_url()}"]
    checkout = deployed_checkout(ws) if kubernetes else None
    if checkout is not None and checkout.note:
        lines.append(checkout.note)
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise DeployError(f"the Prefect server at {server_url()} does not answer ({problem}). Start it with"
                              " `prefect server start`, or point PREFECT_API_URL at a running one.")
        if kubernetes:
            lines.append(ensure_kubernetes_pool(client, params))
        else:
            lines.append(ensure_work_pool(client, params.deploy.work_pool))
        if params.promote.lock == "prefect":
            lines.append(ensure_promotion_limit(client, ws))
        lines += [apply_deployment(ws, spec, checkout) for spec in deployment_specs(params)]
        lines.append(ensure_restart(client, params.deploy))
        lines += configure_notifications(client, params.deploy.webhook_url)
    pool = params.deploy.work_pool
    lines.append(f"start a worker in the cluster: prefect worker start --pool {pool} --type kubernetes (or Prefect's "
                 "Helm chart)" if kubernetes else f"start a worker: prefect worker start --pool {pool}")
    return lines


def server_url() -> str:
    """The API deployments go to; without one Prefect would use a throwaway local server and lose them."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise DeployError("no Prefect server to deploy to: PREFECT_API_URL is not set. Start one with `prefect server"
                          " start` and `export PREFECT_API_URL=http://127.0.0.1:4200/api` (or `prefect config set`).")
    return url


def ensure_work_pool(client: SyncPrefectClient, name: str) -> str:
    """A process pool with one slot: scheduled, on-demand and drift-triggered runs queue behind each other.

    A pool that exists keeps its type (a team may have moved it to Docker or Kubernetes); only its limit is set.
    """
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=name, type=ProcessWorker.type, concurrency_limit=1,
            base_job_template=ProcessWorker.get_default_base_job_template(),
            description="detops: one retraining run at a time (detops deploy).",
        ))
        return f"work pool {name!r}: created (process, concurrency limit 1)"
    if pool.concurrency_limit != 1:
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=1))
        return f"work pool {name!r} ({pool.type}): concurrency limit set to 1 (was {pool.concurrency_limit})"
    return f"work pool {name!r} ({pool.type}): exists, concurrency limit 1"


def ensure_kubernetes_pool(client: SyncPrefectClient, params: Params) -> str:
    """A Kubernetes pool with one slot, its base job template converged on params.yaml (flows.deploy.kubernetes).

    One slot: runs start in pods of their own, so only the server can queue them behind each other (the workspace
    lock is a file in one pod).
    """
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    from flows.deploy.kubernetes import base_job_template

    name, template = params.deploy.work_pool, base_job_template(params.deploy)
    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        client.create_work_pool(WorkPoolCreate(
            name=name, type="kubernetes", concurrency_limit=1, base_job_template=template,
            description="detops: one retraining run at a time, one Job per run (detops deploy).",
        ))
        return f"work pool {name!r}: created (kubernetes, image {params.deploy.image}, concurrency limit 1)"
    if pool.type != "kubernetes":
        raise DeployError(f"work pool {name!r} exists with type {pool.type!r}, not kubernetes: set deploy.work_pool "
                          f"to another name, or delete it first (prefect work-pool delete {name})")
    client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=1, base_job_template=template))
    return f"work pool {name!r} (kubernetes): base job template updated (image {params.deploy.image}), concurrency " \
           "limit 1"


class Checkout(NamedTuple):
    """What a Kubernetes run clones: the commit, the workspace's folder in the repository, a note for the user."""

    commit: str
    workspace: str
    note: str


def deployed_checkout(ws: Workspace) -> Checkout:
    """The workspace repository's HEAD (which must be pushed to deploy.repository), where the workspace sits in it,
    and a note naming the uncommitted changes the runs will not see."""
    import subprocess

    from detops.tracking import git_commit

    state = git_commit(ws.root)
    commit = state["git.commit"]
    if commit == "unknown":
        raise DeployError(f"deploy.infrastructure kubernetes: {ws.root} is not in a git repository, so there is no "
                          "commit for the runs to clone; run `detops deploy` in a clone of deploy.repository")
    prefix = subprocess.run(["git", "rev-parse", "--show-prefix"], cwd=ws.root, capture_output=True, text=True,
                            check=True, timeout=10).stdout.strip().rstrip("/")
    note = "" if state["git.dirty"] != "true" else (
        f"note: the runs clone commit {commit[:12]}, without the uncommitted changes to {state['git.dirty_files']}")
    return Checkout(commit, prefix or ".", note)


def ensure_promotion_limit(client: SyncPrefectClient, ws: Workspace) -> str:
    """The global concurrency limit `promote.lock: prefect` acquires strictly (a missing one is an error there)."""
    from detops.registry.lock import lock_name

    name = lock_name(ws)
    client.upsert_global_concurrency_limit_by_name(name, 1)
    return f"global concurrency limit {name!r}: limit 1 (promote.lock: prefect)"


def apply_deployment(ws: Workspace, spec: DeploymentSpec, checkout: Checkout | None) -> str:
    """Create or update one deployment: module entrypoint, a pull step into the workspace (kubernetes: the clone of
    `checkout`), the workspace as the parameter default (shown in the UI form), the schedule or the event trigger
    from params.yaml."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import DeploymentApplyError, RunnerDeployment
    from prefect.events import DeploymentEventTrigger, DeploymentTriggerTypes, TriggerTypes
    from prefect.runner.storage import LocalStorage

    try:
        schedules = [CronSchedule(cron=spec.cron, timezone=spec.timezone)] if spec.cron else None
    except ValueError as exc:
        raise DeployError(f"deploy.cron / deploy.drift_cron / deploy.labels_cron / deploy.timezone in params.yaml: "
                          f"{exc}") from None
    triggers: list[DeploymentTriggerTypes | TriggerTypes] | None = (
        [DeploymentEventTrigger.model_validate(t) for t in spec.triggers] or None)
    deploy = ws.params.deploy
    variables = job_variables(ws.params, trains=spec.trains)
    if checkout is not None:  # kubernetes: the flow's schema is read here; its runs start in the clone
        from flows.deploy.kubernetes import CheckoutStorage, code_source

        storage: LocalStorage = CheckoutStorage(str(ws.root), deploy.repository, checkout.commit)
        variables["env"] |= code_source(deploy.repository, checkout.commit)
        workspace, where = checkout.workspace, f"{checkout.workspace} of {deploy.repository} at {checkout.commit[:12]}"
    else:
        storage, workspace, where = LocalStorage(str(ws.root)), str(ws.root), str(ws.root)
    # Called from sync code, Prefect's async_dispatch runs (and returns) the sync variants.
    deployment = cast("RunnerDeployment", RunnerDeployment.from_storage(
        storage=storage, entrypoint=spec.entrypoint, name=spec.name,
        description=spec.description, schedules=schedules, triggers=triggers,
        parameters={"workspace": workspace}, tags=list(TAGS), work_pool_name=deploy.work_pool,
        job_variables=variables,
    ))
    try:
        deployment.apply()
    except DeploymentApplyError as exc:
        raise DeployError(f"the Prefect server refused deployment {spec.name!r}: {exc}") from None
    start = f"cron {spec.cron!r} ({spec.timezone})" if spec.cron else (
        "on " + " or ".join(t["expect"][0] for t in spec.triggers) if spec.triggers else "started by hand")
    return f"deployment {deployment.flow_name}/{spec.name}: {spec.entrypoint} in {where}, {start}"

