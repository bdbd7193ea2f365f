"""What retraining on drift does with a batch: a labelled one joins the dataset (copied under
import.batches, where `import` reads it), an unlabelled one gets a list of the images to label.

The landing folder is the inbox and is never modified; the accepted copy is what DVC versions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from detops.atomic import atomic_dir, write_text
from detops.errors import DataError
from detops.workspace import Workspace


@dataclass(frozen=True)
class BatchOutcome:
    """`accepted` holds the batch's copy in the dataset; otherwise `to_label` lists what needs labels."""

    batch: str
    labelled: bool
    images: list[str]
    accepted: Path | None = None
    to_label: Path | None = None


def labels_needed_file(ws: Workspace, batch: str) -> Path:
    return ws.output("monitor", "labels_needed") / f"{batch}.txt"


def take_batch(ws: Workspace, name: str) -> BatchOutcome:
    """Accept a labelled batch into the dataset, or write the list of its images to label."""
    from detops.monitoring.batches import find_batch, read_batch

    data = read_batch(ws, find_batch(ws, name))
    files = [str(im["file_name"]) for im in data.dataset["images"]]
    if not files:
        raise DataError(f"batch {name!r}: no readable images in {data.batch.path}.")
    if data.format == "images":
        listing = write_text(labels_needed_file(ws, name),
                             "".join(f"{data.batch.path / f}\n" for f in files))
        return BatchOutcome(name, False, files, to_label=listing)
    target = ws.resolve(ws.params.import_.batches) / name
    if target.exists():
        return BatchOutcome(name, True, files, accepted=target)  # accepted before: retraining again is enough
    manifest = ws.params.monitor.manifest
    with atomic_dir(target) as tmp:
        shutil.copytree(data.batch.path, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(manifest))
    return BatchOutcome(name, True, files, accepted=target)
