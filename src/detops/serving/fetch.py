"""A registered version's files for serving: the variant `reports/export.json` chose for this machine (the CPU
deployable the model serves, or the GPU one where a GPU can run it) and the version's input example.

`registry.files.download_version_file` does the downloading (and its errors say which version failed and how to
roll back); this module only chooses which artifacts to ask for.
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

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("detops.serve")
EXPORT_REPORT = "export_report"  # registry.package.EXPORT_REPORT, without importing the packaging code


@dataclass(frozen=True)
class Fetched:
    """A downloaded model file, the export variant it is, and its CPU fallback when it is a GPU variant."""

    path: Path
    variant: str
    fallback: Fetched | None = None


def fetch_version(client: MlflowClient, name: str, version: str, dst: Path, *, gpu: bool) -> Fetched:
    """The file version `version` serves here, downloaded under `dst` (RegistryError when it cannot be)."""
    from detops.registry.files import download_version_file

    served = download_version_file(client, name, version, None, dst)
    cpu = Fetched(served, served_variant(dst / "MLmodel"))
    if not gpu:
        return cpu
    variant = gpu_variant(client, name, version, dst)
    if variant is None or variant == cpu.variant:
        return cpu
    path = download_version_file(client, name, version, variant, dst)
    with contextlib.suppress(RegistryError):  # a TensorRT engine's sidecar; an ONNX file carries its metadata
        download_version_file(client, name, version, f"{variant}.meta", dst)
    return Fetched(path, variant, cpu)


def served_variant(mlmodel: Path) -> str:
    """The export variant the model's pyfunc serves (its `serve` model config), e.g. onnx-int8."""
    import yaml

    flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}).get("flavors", {}).get("python_function", {})
    return str((flavor.get("config") or {}).get("serve") or "unknown")


def gpu_variant(client: MlflowClient, name: str, version: str, dst: Path) -> str | None:
    """The GPU deployable that `reports/export.json` (registered with the version) names, if any."""
    from detops.registry.files import download_version_file

    try:
        report = download_version_file(client, name, version, EXPORT_REPORT, dst / "report")
        deployable: dict[str, Any] = json.loads(report.read_text(encoding="utf-8")).get("deployable") or {}
    except (RegistryError, OSError, ValueError) as exc:
        log.info("version %s has no export report (%s): serving its CPU variant", version, exc)
        return None
    value = deployable.get("gpu")
    return str(value) if value else None


def input_example(client: MlflowClient, name: str, version: str, dst: Path) -> bytes | None:
    """The image bytes of the version's MLflow input example (what warm-up runs), or None without one."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        uri = client.get_model_version_download_uri(name, version)
        repo = get_artifact_repository(uri, tracking_uri=client.tracking_uri)
        dst.mkdir(parents=True, exist_ok=True)
        path = Path(repo.download_artifacts("input_example.json", str(dst)))
        return example_image(json.loads(path.read_text(encoding="utf-8")))
    except Exception as exc:  # a missing or odd example only costs a synthetic warm-up image
        log.info("version %s: no usable input example (%s); warming up on a blank image", version, exc)
        return None


def example_image(example: dict[str, Any]) -> bytes | None:
    """The first `image` cell of a split-orient DataFrame example (binary columns are base64 there)."""
    columns = list(example.get("columns") or [])
    rows = example.get("data") or []
    if "image" not in columns or not rows:
        return None
    value = rows[0][columns.index("image")]
    return base64.b64decode(value) if isinstance(value, str) else None
