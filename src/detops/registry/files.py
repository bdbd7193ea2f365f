"""Fetch one file of a registered version: its `MLmodel` says where each pyfunc artifact lies and which one the
model serves, so only that file is downloaded (a champion's checkpoint, the served ONNX file), not the whole model.
`fetch_version` picks the file a version serves on this machine (the CPU deployable, or the GPU one that
`reports/export.json` names where a GPU can run it) and `input_example` the image a server warms up on.

Downloads go through the client's own URIs, never MLflow's global ones, so they work for any store a caller
connected to (SQLite, a server with proxied artifacts).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.errors import RegistryError
from detops.registry.client import is_unreachable, to_registry_error

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("detops.serve")


@dataclass(frozen=True)
class Fetched:
    """A downloaded model file, the export variant it is, and its CPU fallback when it is a GPU variant."""

    path: Path
    variant: str
    fallback: Fetched | None = None


def download_version_file(client: MlflowClient, name: str, version: str, key: str | None, dst: Path) -> Path:
    """The pyfunc artifact `key` of version `version` (None: the one the model serves), downloaded into `dst`.

    Any failure (files deleted, server unreachable, not a detops model) is a RegistryError naming the version:
    callers that gate on it fail closed.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    where = f"version {version} of {name!r}"
    try:
        uri = client.get_model_version_download_uri(name, version)
        repo = get_artifact_repository(uri, tracking_uri=client.tracking_uri)
        dst.mkdir(parents=True, exist_ok=True)
        mlmodel = Path(repo.download_artifacts("MLmodel", str(dst)))
        flavor = pyfunc_flavor(mlmodel)
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


def pyfunc_flavor(mlmodel: Path) -> dict[str, Any]:
    """The `python_function` flavor of an MLmodel file: its artifacts and model config."""
    import yaml

    flavors = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {})
    return dict(flavors.get("python_function") or {})


def fetch_version(client: MlflowClient, name: str, version: str, dst: Path, *, gpu: bool) -> Fetched:
    """The file version `version` serves here, downloaded under `dst` (RegistryError when it cannot be)."""
    served = download_version_file(client, name, version, None, dst)
    cpu = Fetched(served, str((pyfunc_flavor(dst / "MLmodel").get("config") or {}).get("serve") or "unknown"))
    variant = gpu_variant(client, name, version, dst) if gpu else None
    if variant is None or variant == cpu.variant:
        return cpu
    path = download_version_file(client, name, version, variant, dst)
    with contextlib.suppress(RegistryError):  # a TensorRT engine's sidecar; an ONNX file carries its metadata
        download_version_file(client, name, version, f"{variant}.meta", dst)
    return Fetched(path, variant, cpu)


def gpu_variant(client: MlflowClient, name: str, version: str, dst: Path) -> str | None:
    """The GPU deployable that `reports/export.json` (registered with the version) names, if any."""
    from detops.registry.package import EXPORT_REPORT

    try:
        report = download_version_file(client, name, version, EXPORT_REPORT, dst / "report")
        deployable: dict[str, Any] = json.loads(report.read_text(encoding="utf-8")).get("deployable") or {}
    except (RegistryError, OSError, ValueError) as exc:
        log.info("version %s has no export report (%s): serving its CPU variant", version, exc)
        return None
    value = deployable.get("gpu")
    return str(value) if value else None


def input_example(client: MlflowClient, name: str, version: str, dst: Path) -> bytes | None:
    """The image bytes of the version's MLflow input example (the first `image` cell of its split-orient
    DataFrame, base64 there), or None without one: a server then warms up on a blank image."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        uri = client.get_model_version_download_uri(name, version)
        repo = get_artifact_repository(uri, tracking_uri=client.tracking_uri)
        dst.mkdir(parents=True, exist_ok=True)
        example = json.loads(Path(repo.download_artifacts("input_example.json", str(dst))).read_text("utf-8"))
        columns, rows = list(example.get("columns") or []), example.get("data") or []
        value = rows[0][columns.index("image")] if "image" in columns and rows else None
        return base64.b64decode(value) if isinstance(value, str) else None
    except Exception as exc:  # a missing or odd example only costs a synthetic warm-up image
        log.info("version %s: no usable input example (%s); warming up on a blank image", version, exc)
        return None
