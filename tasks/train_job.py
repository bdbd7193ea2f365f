"""`train.num_nodes` > 1 from a flow run in a pod: the flow submits the other nodes itself.

A Prefect Kubernetes work pool starts one pod per run, and DDP across N nodes needs N. So the run's own pod is
node 0 (it has the workspace, the GPU the pool gave it, and the MLflow run), and it creates an Indexed Job of N-1
pods, one per other node, from the pool's image, GPU limit, node selector, tolerations and Secret (`deploy.*`).
Each pod clones the run's repository at the run's commit (the code that trains is the code the run records),
downloads the inputs node 0 uploaded under `paths.resume_store` (`detops.training.nodes`), and joins node 0's
torchrun rendezvous at node 0's pod address. Node 0 watches the Job while it trains: a failed pod fails the run at
once. The Job and the inputs are deleted when training ends, whatever the outcome.

The flow's pod needs a service account allowed to create, read and delete Jobs in its namespace
(deployments/k8s-train/rbac.yaml, named in `deploy.service_account`).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from detops.config.params import Params
from detops.errors import TrainingError
from detops.steps.result import StepResult
from detops.training.nodes import MASTER_PORT, PARAMS_FILE, torchrun_command, upload_inputs, write_run_params
from detops.workspace import Workspace

NODE_ROOT = "/srv/detops"  # in a node's pod: the checkout (code/) and the workspace (ws/)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
LABEL = "app.kubernetes.io/name"
POLL_SECONDS = 5.0
FINISH_SECONDS = 600.0  # after node 0 is done, how long the other pods may take to exit


class Jobs(Protocol):
    """Where the other nodes' Job runs: a Kubernetes API here; in the tests, the pods' commands on this machine."""

    def create(self, manifest: dict[str, Any]) -> None: ...

    def state(self, name: str) -> str:
        """`running`, `succeeded` or `failed` (with the reason after a colon)."""
        ...

    def delete(self, name: str) -> None: ...


class KubernetesJobs:
    """Jobs through the Kubernetes API, in the namespace of the pod this runs in (or the kubeconfig's context)."""

    def __init__(self) -> None:
        try:
            from kubernetes import client, config
        except ImportError:
            raise TrainingError("train.num_nodes > 1 submits a Kubernetes Job: pip install 'detops[kubernetes]'") \
                from None
        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config()
            except (config.ConfigException, FileNotFoundError, TypeError) as exc:
                raise TrainingError(
                    f"train.num_nodes is > 1, so this run submits the other nodes as a Kubernetes Job, but it found "
                    f"no cluster (neither in-cluster nor a kubeconfig: {exc}). Run it on a `kubernetes` work pool "
                    "(detops deploy), or under torchrun on each node yourself, or set train.num_nodes=1.") from None
        self.api = client.BatchV1Api()
        self.namespace = (SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
                          if SERVICE_ACCOUNT_NAMESPACE.is_file() else "default")

    def create(self, manifest: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.create_namespaced_job(self.namespace, manifest)
        except ApiException as exc:
            if exc.status != 403:
                raise
            raise TrainingError(f"this pod may not create Jobs in namespace {self.namespace} ({exc.reason}): apply "
                                "deployments/k8s-train/rbac.yaml and set deploy.service_account: detops-runs, then "
                                "`detops deploy`") from None

    def state(self, name: str) -> str:
        status = self.api.read_namespaced_job_status(name, self.namespace).status
        for condition in status.conditions or []:
            if condition.status == "True" and condition.type in ("Complete", "SuccessCriteriaMet"):
                return "succeeded"
            if condition.status == "True" and condition.type in ("Failed", "FailureTarget"):
                return f"failed: {condition.reason}: {condition.message}"
        return "running"

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise


def node_address() -> str:
    """This pod's IP, which the other pods reach: the downward API's POD_IP where set, else the hostname's."""
    return os.environ.get("POD_IP") or socket.gethostbyname(socket.gethostname())


def job_name(flow_run_id: str | None = None) -> str:
    """A DNS-1123 name per run (a Job's name is its pods' prefix)."""
    return f"detops-train-{(flow_run_id or uuid.uuid4().hex)[:8]}"


def node_script(params: Params, master_addr: str, port: int) -> str:
    """What each other node's pod runs: the run's commit, node 0's inputs, then torchrun as node index + 1."""
    train = torchrun_command(params.train, '"$((JOB_COMPLETION_INDEX + 1))"', master_addr, '"$DETOPS_NODE_ROOT/ws"',
                             f'"$DETOPS_NODE_ROOT/ws/{PARAMS_FILE}"', port, python="python")
    return "\n".join([
        "set -eu",
        'git clone --quiet "$DETOPS_REPOSITORY" "$DETOPS_NODE_ROOT/code"',
        'git -C "$DETOPS_NODE_ROOT/code" checkout --quiet "$DETOPS_COMMIT"',
        'export PYTHONPATH="$DETOPS_NODE_ROOT/code/src:$DETOPS_NODE_ROOT/code"',
        'mkdir -p "$DETOPS_NODE_ROOT/ws" && cd "$DETOPS_NODE_ROOT/ws"',
        'python -m detops --workspace "$DETOPS_NODE_ROOT/ws" node-inputs "$DETOPS_INPUTS"',
        "exec " + " ".join(word if word.startswith('"') else shlex.quote(word) for word in train),
    ])


def job_manifest(params: Params, name: str, commit: str, inputs: str, master_addr: str,
                 port: int = MASTER_PORT) -> dict[str, Any]:
    """The Indexed Job of nodes 1..N-1, from the pool's settings in `deploy`: a lost pod fails it (DDP cannot go on
    without a node; the next run resumes the checkpoint)."""
    deploy, others = params.deploy, params.train.num_nodes - 1
    labels = {LABEL: "detops-train", "detops/job": name}
    container: dict[str, Any] = {
        "name": "train", "image": deploy.image, "command": ["sh", "-c", node_script(params, master_addr, port)],
        "env": [{"name": k, "value": v} for k, v in {
            "DETOPS_REPOSITORY": deploy.repository, "DETOPS_COMMIT": commit, "DETOPS_INPUTS": inputs,
            "DETOPS_NODE_ROOT": NODE_ROOT}.items()],
        "resources": {"limits": {"nvidia.com/gpu": deploy.gpus}} if deploy.gpus else {},
        "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],  # DataLoader workers share batches there
    }
    if deploy.env_secret:
        container["envFrom"] = [{"secretRef": {"name": deploy.env_secret}}]
    pod: dict[str, Any] = {
        "restartPolicy": "Never", "containers": [container],
        "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory"}}],
    }
    if deploy.node_selector:
        pod["nodeSelector"] = dict(deploy.node_selector)
    if deploy.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_defaults=True) for t in deploy.tolerations]
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
        "spec": {"completionMode": "Indexed", "completions": others, "parallelism": others, "backoffLimit": 0,
                 "ttlSecondsAfterFinished": 3600, "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


def run_commit(ws: Workspace) -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.root, capture_output=True, text=True)
    if done.returncode != 0:
        raise TrainingError(f"{ws.root} is not a git checkout: the other nodes clone the run's commit")
    return done.stdout.strip()


def train_on_nodes(ws: Workspace, resume: bool, jobs: Jobs | None = None, flow_run_id: str | None = None,
                   port: int = MASTER_PORT) -> StepResult:
    """Node 0 here, nodes 1..N-1 as a Job; returns node 0's result once every node is done."""
    import json

    from detops.locking import HELD_BY
    from detops.objectstore import is_url
    from detops.training.nodes import remove_inputs

    params = ws.params
    if not (params.deploy.image and params.deploy.repository):
        raise TrainingError("train.num_nodes > 1 starts the other nodes from deploy.image at deploy.repository's "
                            "commit: set both (the kubernetes work pool has them)")
    if not is_url(params.paths.resume_store):
        raise TrainingError("train.num_nodes > 1 needs paths.resume_store on object storage (s3://...): the other "
                            "nodes fetch their inputs there, and resume from the checkpoints kept there")
    jobs = jobs if jobs is not None else KubernetesJobs()
    name = job_name(flow_run_id)
    inputs = f"{params.paths.resume_store.rstrip('/')}/nodes/{name}"
    params_file = write_run_params(ws)
    try:  # a partial upload is removed too
        count = upload_inputs(ws, inputs)
        master = node_address()
        jobs.create(job_manifest(params, name, run_commit(ws), inputs, master, port))
        command = torchrun_command(params.train, "0", master, str(ws.root), str(params_file), port, resume,
                                   python=sys.executable)
        node0 = subprocess.Popen(command, env={**os.environ, HELD_BY: str(ws.root)})
        try:
            while node0.poll() is None:
                state = jobs.state(name)
                if state.startswith("failed"):
                    raise TrainingError(f"node pod(s) of Job {name} {state}; node 0 stopped")
                time.sleep(POLL_SECONDS)
        finally:
            if node0.poll() is None:
                node0.terminate()
                node0.wait(60)
        if node0.returncode != 0:
            raise TrainingError(f"node 0 of {params.train.num_nodes} failed (exit {node0.returncode}): its log is "
                                "above; the other nodes' are in Job " + name)
        deadline = time.monotonic() + FINISH_SECONDS
        while (state := jobs.state(name)) == "running" and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        if state != "succeeded":
            raise TrainingError(f"node 0 finished, but Job {name} of the other nodes did not: {state}")
    finally:
        jobs.delete(name)
        remove_inputs(inputs)
    files = ws.outputs("train")
    metrics = json.loads(files["metrics"].read_text(encoding="utf-8"))
    return StepResult("train", {k: ws.relative(p) for k, p in files.items()}, metrics,
                      [f"trained on {params.train.num_nodes} nodes: this pod and Job {name} ({count} input files "
                       "sent through paths.resume_store)"])
