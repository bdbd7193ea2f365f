"""New data batches: folders under the landing folder, read once complete, recorded in a ledger.

A batch is complete when it holds the manifest file (`monitor.manifest`), which whoever delivers the batch copies
last, so a half-copied batch is never read. Its labels may be in any supported format, told apart by their files:
`Annotations/` is Pascal VOC; `data.yaml`, another `*.yaml` or `classes.txt` is YOLO (an image without its `.txt`
is a background image, as YOLO defines); a `*.json` is COCO (`annotations.json`, or the only one); none of those is
a plain image folder (unlabelled). Hidden folders (`.incoming`) are never batches.

The ledger (`<landing>/ledger.json`) records every batch checked, so a batch is checked and announced once.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detops.atomic import write_json
from detops.cpus import thread_workers
from detops.dataset.canonical import Dataset
from detops.dataset.images import ImageInfo, probe_image
from detops.errors import DataError
from detops.formats import read_source
from detops.formats.folder import FORMAT as IMAGE_FOLDER
from detops.formats.folder import read_image_folder
from detops.formats.source import SourceDataset, to_canonical
from detops.progress import track
from detops.workspace import Workspace


@dataclass(frozen=True)
class Batch:
    name: str
    path: Path


@dataclass
class BatchData:
    """A batch as a canonical dataset of its readable images, and the images it could not read."""

    batch: Batch
    format: str
    dataset: Dataset
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def landing_folder(ws: Workspace) -> Path:
    return ws.resolve(ws.params.monitor.landing)


def complete_batches(ws: Workspace) -> list[Batch]:
    """Every batch folder holding the manifest, by name; none when the landing folder does not exist yet."""
    root = landing_folder(ws)
    if not root.is_dir():
        return []
    manifest = ws.params.monitor.manifest
    return [Batch(p.name, p) for p in sorted(root.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / manifest).is_file()]


def new_batches(ws: Workspace) -> list[Batch]:
    """Complete batches the ledger has not recorded."""
    seen = ledger(ws).entries()
    return [b for b in complete_batches(ws) if b.name not in seen]


def find_batch(ws: Workspace, name: str) -> Batch:
    """The named batch; DataError when it is missing or not complete (its manifest not there yet)."""
    path = landing_folder(ws) / name
    if Path(name).name != name or name.startswith(".") or not path.is_dir():
        raise DataError(f"batch {name!r}: no folder {path}. A batch is a folder under monitor.landing "
                        f"({ws.params.monitor.landing}).")
    if not (path / ws.params.monitor.manifest).is_file():
        raise DataError(f"batch {name!r} is not complete: {path / ws.params.monitor.manifest} is missing. Copy the "
                        "manifest file last, once every image and label is in place.")
    return Batch(name, path)


def detect_format(root: Path) -> str:
    """coco, yolo, voc, or `images` (no labels), from the files the batch holds."""
    if (root / "Annotations").is_dir():
        return "voc"
    if any(root.glob("*.yaml")) or any(root.glob("*.yml")) or (root / "classes.txt").is_file():
        return "yolo"
    if any(root.glob("*.json")):
        return "coco"
    return IMAGE_FOLDER


def read_batch(ws: Workspace, batch: Batch, workers: int | None = None) -> BatchData:
    """The batch's labels (if any) and every image file it names; unreadable images are skipped and listed.
    `workers`: threads reading images (default: monitor.workers; `import` passes its own)."""
    fmt = detect_format(batch.path)
    source = read_image_folder(batch.path) if fmt == IMAGE_FOLDER else read_source(fmt, batch.path)
    paths = source.image_paths()
    threads = thread_workers(ws.params.monitor.workers if workers is None else workers)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        probed = list(track(pool.map(_probe, paths), f"Reading batch {batch.name}", total=len(paths)))
    keep = [i for i, p in enumerate(probed) if isinstance(p, ImageInfo)]
    skipped = [p for p in probed if isinstance(p, str)]
    dataset, notes = to_canonical(_only(source, keep), [p for p in probed if isinstance(p, ImageInfo)],
                                  ws.relative(batch.path))
    return BatchData(batch, fmt, dataset, skipped, notes)


def _probe(path: Path) -> ImageInfo | str:
    try:
        return probe_image(path)
    except DataError as exc:
        return str(exc)


def _only(source: SourceDataset, keep: list[int]) -> SourceDataset:
    """The source without the images not in `keep` (and their boxes)."""
    index = {old: new for new, old in enumerate(keep)}
    boxes = [replace(b, image=index[b.image]) for b in source.boxes if b.image in index]
    return replace(source, images=[source.images[i] for i in keep], boxes=boxes)


class Ledger:
    """`{"batches": {name: entry}}` in one json file; updates hold a file lock, so concurrent checks keep both."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: the batch ledger is unreadable ({exc}). Fix or delete it (every "
                            "complete batch is then checked again).") from None
        batches = data.get("batches") if isinstance(data, dict) else None
        if not isinstance(batches, dict):
            raise DataError(f"{self.path}: not a batch ledger (no `batches` mapping). Fix or delete it.")
        return batches

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Add or replace the entry of batch `name`, stamped with the time it was recorded."""
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock"):
            batches = self.entries()
            batches[name] = {**entry, "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_json(self.path, {"batches": dict(sorted(batches.items()))})

    def update(self, name: str, **fields: Any) -> None:
        """Merge `fields` into the entry of batch `name`, keeping what it holds; a batch the ledger lacks is left
        out (an entry would mark it checked, and it is not)."""
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock"):
            batches = self.entries()
            if name not in batches:
                return
            batches[name] = {**batches[name], **fields}
            write_json(self.path, {"batches": dict(sorted(batches.items()))})


def ledger(ws: Workspace) -> Ledger:
    return Ledger(ws.output("monitor", "ledger"))
