"""The model the labelling loop runs: the champion's checkpoint (label.model empty), or the file or registry
reference label.model names.

A checkpoint, not the served ONNX file: selection needs the backbone's embeddings as well as the detections, and
both then come from one file, run through `detops.inference` and `detops.monitoring.embeddings`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from detops.errors import RegistryError
from detops.workspace import Workspace


@contextmanager
def labelling_checkpoint(ws: Workspace) -> Iterator[tuple[Path, str]]:
    """(local checkpoint, what it is); a downloaded champion lives as long as the `with` block. RegistryError when
    there is no champion, so nothing is selected or accepted on an unknown model."""
    from detops.registry.resolve import Reference, parse_reference

    spec = ws.params.label.model
    reference = (Reference(ws.params.mlflow.registered_model, alias=ws.params.promote.alias) if not spec
                 else parse_reference(ws, spec))
    if reference is None:
        yield ws.resolve(spec), spec
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
        yield path, f"{reference} (version {version})"
