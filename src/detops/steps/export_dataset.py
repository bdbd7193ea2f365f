"""Step `export-dataset`: write the canonical dataset out as a standalone COCO, YOLO or VOC folder.

Images are hard-linked when the filesystem allows it (copied otherwise). The folder is built
beside `--out` and moved into place at the end, so an error leaves nothing half-written.
"""

from __future__ import annotations

from pathlib import Path

from detops.atomic import atomic_dir
from detops.dataset.canonical import dataset_root, read_dataset
from detops.dataset.paths import resolve_inside
from detops.errors import DataError
from detops.formats import FORMATS, write_as
from detops.formats.source import listing
from detops.steps.result import StepResult
from detops.workspace import Workspace


def run(ws: Workspace, fmt: str, out: Path, dataset: Path | None = None) -> StepResult:
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}.")
    source = ws.resolve(dataset) if dataset else ws.dataset_json
    data = read_dataset(source)
    target = ws.resolve(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"--out {target}: exists and is not an empty folder; export writes a new dataset there.")
    root = dataset_root(data, ws.root)
    paths = {
        int(im["id"]): resolve_inside(root, im["file_name"], f"{source} image id {im['id']}") for im in data["images"]
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"{source}: {len(missing)} image file(s) not found under {root}: {listing(missing)}")
    with atomic_dir(target) as tmp:
        notes = write_as(fmt, data, paths, tmp)
    return StepResult(
        step="export-dataset",
        outputs={"dataset": ws.relative(target)},
        metrics={
            "format": fmt,
            "images": len(data["images"]),
            "boxes": len(data["annotations"]),
            "classes": len(data["categories"]),
        },
        notes=notes,
    )

