"""Step `import`: read a COCO, YOLO or Pascal VOC dataset into the canonical COCO json.

The annotations are parsed first, then every image file is read once (in a thread pool) for its
real size and content hash; `data/prepared/dataset.json` is written only when all of it worked,
so a failed import leaves the previous file as it was.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from detops.dataset.canonical import SPLITS, Dataset, write_dataset
from detops.dataset.images import probe_images
from detops.errors import DataError
from detops.formats import read_source
from detops.formats.source import to_canonical
from detops.steps.result import StepResult
from detops.workspace import Workspace


def run(ws: Workspace) -> StepResult:
    params = ws.params.import_
    root = ws.resolve(params.source)
    if not root.is_dir():
        raise DataError(
            f"import.source {params.source!r}: folder {root} not found. Pass the dataset folder: "
            "detops import --format FORMAT SRC"
        )
    source = read_source(params.format, root, _annotation_file(ws, root, params.annotations))
    if not source.images:
        raise DataError(f"{root}: no images found; is --format {params.format} right for this dataset?")
    infos = probe_images(
        source.image_paths(),
        params.workers,
        description=f"Reading {len(source.images)} images",
        where=lambda i: source.images[i].where,
    )
    dataset, notes = to_canonical(source, infos, ws.relative(root), params.size_mismatch)
    dataset = with_accepted_batches(ws, dataset, notes)
    write_dataset(ws.dataset_json, dataset)

    splits = Counter(im.get("source_split") for im in dataset["images"])
    metrics: dict[str, object] = {
        "images": len(dataset["images"]),
        "boxes": len(dataset["annotations"]),
        "classes": len(dataset["categories"]),
        **{f"images_{s}": splits[s] for s in SPLITS if splits[s]},
        "content_hash": dataset["info"]["content_hash"],
    }
    return StepResult(step="import", outputs={"dataset": ws.relative(ws.dataset_json)}, metrics=metrics, notes=notes)


def with_accepted_batches(ws: Workspace, dataset: Dataset, notes: list[str]) -> Dataset:
    """The dataset plus every accepted batch under import.batches (labelled, any format); the images of a batch's
    accuracy share are marked, so promote can score the candidate on those it did not train on."""
    from detops.dataset.merge import merge
    from detops.monitoring.batches import Batch, read_batch
    from detops.monitoring.share import mark_share

    folder = ws.resolve(ws.params.import_.batches)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    batches = {}
    for name in names:
        data = read_batch(ws, Batch(name, folder / name), ws.params.import_.workers)
        if data.format == "images":
            raise DataError(f"{folder / name}: an accepted batch must be labelled (COCO, YOLO or VOC); this one holds "
                            "images only. Label it, or move it out of import.batches.")
        if data.skipped:
            notes.append(f"batch {name}: {len(data.skipped)} unreadable image(s) left out")
        batches[name] = mark_share(folder / name, data.dataset)
    if batches:
        notes.append(f"{len(batches)} accepted batch(es) joined the dataset: {', '.join(batches)}")
    return merge(dataset, batches, ws.root)


def _annotation_file(ws: Workspace, root: Path, annotations: str) -> Path | None:
    """import.annotations: inside the dataset root first, else relative to the workspace."""
    if not annotations:
        return None
    given = Path(annotations).expanduser()
    for candidate in [given] if given.is_absolute() else [root / given, ws.resolve(given)]:
        if candidate.is_file():
            return candidate
    raise DataError(f"import.annotations {annotations!r}: file not found in {root} or the workspace.")
