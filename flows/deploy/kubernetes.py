"""`deploy.infrastructure: kubernetes`: the work pool's base job template and the deployments' pull steps.

The template is prefect-kubernetes' own default with what a training run needs and it lacks: a GPU limit (a job
variable, set by the deployments that train), the pool's node selector and tolerations, and the environment from a
Secret. Runs clone the repository at the commit `detops deploy` ran at and install it over the image's detops, so
the code a run executes is the commit its MLflow run records as `git.commit`.
"""

from __future__ import annotations

import copy
from typing import Any

from prefect.runner.storage import LocalStorage

from detops.config.deploy import DeployParams
from detops.errors import DeployError
from detops.tracking import CODE_SOURCE_ENV
from flows.deploy.spec import GPUS_VARIABLE

GPU_RESOURCE = "nvidia.com/gpu"  # NVIDIA's device plugin; the default template has no GPU variable
CLONE_STEP = "clone"  # the git_clone pull step's id, whose `directory` output the install step reads
# --no-deps: the image holds the dependencies. Where site-packages is not writable (deployments/Dockerfile's user),
# pip installs into the user's site, ahead of the image's detops on sys.path (the Dockerfile creates it, since Python
# leaves out one that did not exist when it started).
INSTALL_SCRIPT = "python -m pip install --quiet --no-deps ."


def default_base_job_template() -> dict[str, Any]:
    """prefect-kubernetes' default, with an error that says how to install it."""
    try:
        from prefect_kubernetes.worker import KubernetesWorker
    except ImportError:
        raise DeployError("deploy.infrastructure kubernetes needs prefect-kubernetes: pip install "
                          "'detops[kubernetes]' (Python >= 3.10)") from None
    return KubernetesWorker.get_default_base_job_template()


def base_job_template(deploy: DeployParams) -> dict[str, Any]:
    """The default template plus the GPU limit, node selector, tolerations, envFrom, the image and the service account
    from params.yaml.

    GPUs, node selector and tolerations are job variables (a deployment or a run may override them); the image is
    the `image` variable's default, the Secret is written into the Job.
    """
    template = copy.deepcopy(default_base_job_template())
    variables = template["variables"]["properties"]
    variables["image"]["default"] = deploy.image
    if deploy.service_account:
        variables["service_account_name"]["default"] = deploy.service_account
    variables[GPUS_VARIABLE] = {
        "title": "GPUs", "anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}], "default": None,
        "description": f"The {GPU_RESOURCE} limit of the job's container (the device plugin's resource); unset: "
                       "no GPU. detops sets it on the deployments that train (deploy.gpus).",
    }
    variables["node_selector"] = {
        "title": "Node Selector", "type": "object", "additionalProperties": {"type": "string"},
        "default": dict(deploy.node_selector), "description": "nodeSelector of the job's pod (deploy.node_selector).",
    }
    variables["tolerations"] = {
        "title": "Tolerations", "type": "array", "items": {"type": "object"},
        "default": [t.model_dump(exclude_defaults=True) for t in deploy.tolerations],
        "description": "Tolerations of the job's pod (deploy.tolerations).",
    }
    pod = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["nodeSelector"] = "{{ node_selector }}"
    pod["tolerations"] = "{{ tolerations }}"
    container = pod["containers"][0]
    container["resources"]["limits"][GPU_RESOURCE] = "{{ " + GPUS_VARIABLE + " }}"
    if deploy.env_secret:
        container["envFrom"] = [{"secretRef": {"name": deploy.env_secret}}]
    return template


def code_source(repository: str, commit: str) -> dict[str, str]:
    """The run's environment that makes its MLflow runs record where its code came from (`code.source`)."""
    return {CODE_SOURCE_ENV: f"git_clone {repository}@{commit}"}


def pull_steps(repository: str, commit: str) -> list[dict[str, Any]]:
    """Clone `repository` at `commit` (the run then starts in the checkout) and install it over the image's
    detops, before Prefect imports the flow's module."""
    return [
        {"prefect.deployments.steps.git_clone": {"id": CLONE_STEP, "repository": repository, "commit_sha": commit}},
        {"prefect.deployments.steps.run_shell_script": {
            "directory": "{{ " + CLONE_STEP + ".directory }}", "script": INSTALL_SCRIPT, "stream_output": True}},
    ]



class CheckoutStorage(LocalStorage):
    """The workspace, from which `detops deploy` reads the flow's parameters; its runs pull the clone instead."""

    def __init__(self, path: str, repository: str, commit: str) -> None:
        super().__init__(path)
        self.repository, self.commit = repository, commit

    def to_pull_step(self) -> list[dict[str, Any]]:  # type: ignore[override]  # a list: Prefect takes several steps
        return pull_steps(self.repository, self.commit)
