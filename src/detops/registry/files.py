"""Fetch one file of a registered version: its `MLmodel` says where each pyfunc artifact lies and which one the
model serves, so only that file is downloaded (a champion's checkpoint, the served ONNX file), not the whole model.

Downloads go through the client's own URIs, never MLflow's global ones, so they work for any store a caller
connected to (SQLite, a server with proxied artifacts).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.errors import RegistryError
from detops.registry.client import is_unreachable, to_registry_error

if TYPE_CHECKING:
    from mlflow import MlflowClient


def download_version_file(client: MlflowClient, name: str, version: str, key: str | None, dst: Path) -> Path:
    """The pyfunc artifact `key` of version `version` (None: the one the model serves), downloaded into `dst`.

    Any failure (files deleted, server unreachable, not a detops model) is a RegistryError naming the version:
    callers that gate on it fail closed.
    """
    import yaml
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    where = f"version {version} of {name!r}"
    try:
        uri = client.get_model_version_download_uri(name, version)
        repo = get_artifact_repository(uri, tracking_uri=client.tracking_uri)
        dst.mkdir(parents=True, exist_ok=True)
        mlmodel = Path(repo.download_artifacts("MLmodel", str(dst)))
        flavor: dict[str, Any] = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {}).get(
            "python_function", {})
        wanted = key or (flavor.get("config") or {}).get("serve")  # pyfunc keeps model_config here
        entry = (flavor.get("artifacts") or {}).get(wanted) if wanted else None
        if entry is None:
            raise RegistryError(f"{where} is not a detops model: its MLmodel has no {wanted or 'served'!r} artifact"
                                " (register it with `detops promote`).")
        return Path(repo.download_artifacts(str(entry["path"]), str(dst)))
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc) or repr(exc)
        if is_unreachable(message):
            raise to_registry_error(exc, f"the download of {where}") from exc
        raise RegistryError(f"cannot download {where} ({message.strip().splitlines()[0]}):"
                            " its files were deleted or the store is unreachable. Restore them, or roll the alias"
                            " back to a version whose files exist (`detops registry rollback --to VERSION`).") from exc
