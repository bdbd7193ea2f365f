"""One registered version per training run, tagged with what it was trained on and its headline test numbers.

Registration happens under the promotion lock: look the run id up among the model's versions, and only if none
has it log the split files, the pyfunc model, then create the version with its tags in one call. A failure on
the way leaves no version (at worst an unregistered logged model), and a re-run registers nothing new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from detops.registry.client import registry_call
from detops.registry.lock import promotion_lock
from detops.registry.names import SPLITS_FOLDER, check_model_name
from detops.registry.package import ModelFiles, log_model
from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

RUN_TAGS = ("data.content_hash", "data.batches", "data.train_hash", "data.val_hash", "data.test_hash", "git.commit",
            "git.dirty")
RUN_ID_TAG = "detops.run_id"
PARAMS_HASH_TAG = "detops.params_hash"
SERVE_TAG = "detops.serve"


@registry_call
def version_of_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version registered from `run_id`, or None (the model itself may not exist yet)."""
    quote = '"' if "'" in check_model_name(name) else "'"
    found = client.search_model_versions(f"name = {quote}{name}{quote} and run_id = '{run_id}'")
    return min(found, key=lambda mv: int(mv.version)) if found else None


@registry_call
def register_run(ws: Workspace, client: MlflowClient, run: Run, metrics: Mapping[str, float | None],
                 files: ModelFiles) -> tuple[ModelVersion, bool]:
    """(the run's version, whether this call created it). Needs `tracking.configure(ws)` first: MLflow resolves
    the `models:/m-...` source of a new version through its global tracking URI."""
    from mlflow.exceptions import MlflowException

    name, run_id = ws.params.mlflow.registered_model, run.info.run_id
    with promotion_lock(ws):
        existing = version_of_run(client, name, run_id)
        if existing is not None:
            return existing, False
        try:
            client.create_registered_model(name, description="detops object detector (registered by detops promote)")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        for split in ("train", "val", "test"):
            client.log_artifact(run_id, str(ws.split_json(split)), SPLITS_FOLDER)
        model_id = log_model(ws, run_id, files)
        tags = version_tags(ws, run, metrics, files)
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, tags=tags,
                                              model_id=model_id)  # a tracking server requires the id
        return version, True


def tagged_metrics(ws: Workspace) -> tuple[str, ...]:
    """The test metrics a version carries as tags: the gate's metric and mAP@0.5. The other ~20 stay on the run:
    as tags they crowd the MLflow UI's version table."""
    return tuple(dict.fromkeys((ws.params.promote.metric, "test/map_50")))


def version_tags(ws: Workspace, run: Run, metrics: Mapping[str, float | None], files: ModelFiles) -> dict[str, str]:
    """The gate's metric and mAP@0.5, the data and split hashes and git commit already on the run, the params hash,
    the run id."""
    tags = {key: repr(float(value)) for key in tagged_metrics(ws) if (value := metrics.get(key)) is not None}
    tags.update({key: run.data.tags[key] for key in RUN_TAGS if run.data.tags.get(key)})
    tags[PARAMS_HASH_TAG] = params_hash(ws.params.to_dict())
    tags[RUN_ID_TAG] = run.info.run_id
    tags[SERVE_TAG] = files.serve
    return tags


def params_hash(params: Mapping[str, Any]) -> str:
    """sha256 of the effective params as canonical json: equal params, equal hash, whatever the key order."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
