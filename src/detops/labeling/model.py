"""The model the labelling loop runs: the champion's checkpoint (label.model empty), or the file or registry
reference label.model names.

A checkpoint, not the served ONNX file: selection needs the backbone's embeddings as well as the detections, and
both then come from one file, run through `detops.inference` and `detops.monitoring.embeddings`. Selection, the
audit and push's pre-annotations all resolve it here, so the images chosen, the labels audited and the boxes
labellers start from come from one model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from detops.errors import RegistryError
from detops.workspace import Workspace


@dataclass(frozen=True)
class LabellingModel:
    """The labelling loop's model file, what it is (reports), and its version (Label Studio's `model_version`)."""

    path: Path
    description: str  # `models:/<name>@champion (version 3)`, or label.model as written
    version: str  # the registry version, or the file's name


@contextmanager
def labelling_model(ws: Workspace) -> Iterator[LabellingModel]:
    """The one resolver of label.model for select, audit and push; a downloaded champion lives as long as the
    `with` block. RegistryError when there is no champion, so nothing is selected, accepted or pre-annotated on an
    unknown model."""
    from detops.registry.resolve import Reference, parse_reference

    spec = ws.params.label.model
    reference = (Reference(ws.params.mlflow.registered_model, alias=ws.params.promote.alias) if not spec
                 else parse_reference(ws, spec))
    if reference is None:
        path = ws.resolve(spec)
        yield LabellingModel(path, spec, path.name)
        return
    from detops.registry.client import connect
    from detops.registry.files import download_version_file
    from detops.registry.package import CHECKPOINT
    from detops.registry.resolve import resolve_version

    client = connect(ws)
    try:
        version = resolve_version(client, reference)
    except RegistryError as exc:
        raise RegistryError(f"the labelling loop runs the champion ({reference}), and there is none: {exc} Or "
                            "set label.model to a checkpoint.") from None
    with tempfile.TemporaryDirectory(prefix="detops-label-") as tmp:
        path = download_version_file(client, reference.name, version, CHECKPOINT, Path(tmp))
        yield LabellingModel(path, f"{reference} (version {version})", version)
