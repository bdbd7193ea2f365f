"""`detops predict --model` accepts registry references as well as files: `champion` (any alias of
`mlflow.registered_model`), `models:/<name>/<version>` and `models:/<name>@<alias>`. A reference resolves to the
file the registered model serves, downloaded to a temporary folder that lives as long as the `with` block."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from detops.errors import RegistryError
from detops.registry.client import registry_call
from detops.registry.names import check_alias, check_model_name
from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

_URI = re.compile(r"^models:/(?P<name>[^@]+?)(?:/(?P<version>\d+)|@(?P<alias>[\w\-]+))/?$")
_BARE_ALIAS = re.compile(r"^[\w\-]+$")


@dataclass(frozen=True)
class Reference:
    """A registered model and either a version or an alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}/{self.version}" if self.version else f"models:/{self.name}@{self.alias}"


def parse_reference(ws: Workspace, spec: str) -> Reference | None:
    """The registry reference `spec` names, or None when it is a file path (an existing file always wins)."""
    if spec.startswith("models:/"):
        match = _URI.match(spec)
        if not match:
            raise RegistryError(f"{spec!r} is not a model URI detops reads; use models:/<name>/<version> or"
                                " models:/<name>@<alias>.")
        name = check_model_name(match["name"])
        return Reference(name, match["version"], check_alias(match["alias"]) if match["alias"] else None)
    if Path(spec).exists() or not _BARE_ALIAS.match(spec):
        return None
    return Reference(ws.params.mlflow.registered_model, alias=check_alias(spec))


@contextmanager
def local_model(ws: Workspace, spec: str) -> Iterator[tuple[Path, str]]:
    """(local file for `load_predictor`, what it is) for a file path or a registry reference."""
    reference = parse_reference(ws, spec)
    if reference is None:
        yield Path(spec).resolve(), spec
        return
    from detops.registry.client import connect
    from detops.registry.files import download_version_file

    client = connect(ws)
    version = resolve_version(client, reference)
    with tempfile.TemporaryDirectory(prefix="detops-model-") as tmp:
        path = download_version_file(client, reference.name, version, None, Path(tmp))
        yield path, f"{reference} (version {version}, {path.name})"


@registry_call
def resolve_version(client: MlflowClient, reference: Reference) -> str:
    """The version number `reference` names, checked to exist; a missing model, version or alias says how to
    list what exists."""
    from mlflow.exceptions import MlflowException

    try:
        if reference.version:
            return str(client.get_model_version(reference.name, reference.version).version)
        return str(client.get_model_version_by_alias(reference.name, str(reference.alias)).version)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        what = f"version {reference.version}" if reference.version else f"alias {reference.alias!r}"
        raise RegistryError(f"model {reference.name!r} has no {what} in this MLflow store (--model takes a file, an"
                            " alias, models:/<name>/<version> or models:/<name>@<alias>); `detops registry list`"
                            " shows the versions and aliases, `detops promote` sets the champion.") from None
