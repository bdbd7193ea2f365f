"""New data batches: folders under the landing folder, read once complete, recorded in a ledger.

A batch is complete when it holds the manifest file (`monitor.manifest`), which whoever delivers the batch copies
last, so a half-copied batch is never read. Its labels may be in any supported format, told apart by their files:
`Annotations/` is Pascal VOC; `data.yaml`, another `*.yaml` or `classes.txt` is YOLO (an image without its `.txt`
is a background image, as YOLO defines); a `*.json` is COCO (`annotations.json`, or the only one); none of those is
a plain image folder (unlabelled). Hidden folders (`.incoming`) are never batches.

The ledger (`<landing>/ledger.json`) records every batch checked, so a batch is checked and announced once.

`monitor.landing` may be an fsspec URL (object storage, `monitoring.landing`): then the batches are listed there
and each is read from a local copy, and the ledger is an object beside them, so a run in a fresh pod knows what
was checked. Its writers (monitor, labels-sync, the acceptance of a batch) hold the workspace lock on one
machine; on a cluster they are serialised through Prefect's global concurrency limit, as `detops deploy` sets up.
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
from detops.monitoring.landing import COPIES, is_url, landing_location, open_store
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
    """The folder batches are read from: `monitor.landing`, or the local copies of those on object storage."""
    location = landing_location(ws)
    return ws.resolve(COPIES) if isinstance(location, str) else location


def complete_batches(ws: Workspace) -> list[Batch]:
    """Every batch folder holding the manifest, by name; none when the landing folder does not exist yet."""
    manifest, location = ws.params.monitor.manifest, landing_location(ws)
    if isinstance(location, str):
        return [Batch(name, landing_folder(ws) / name) for name in open_store(location).sealed(manifest)]
    if not location.is_dir():
        return []
    return [Batch(p.name, p) for p in sorted(location.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / manifest).is_file()]


def batch_folders(ws: Workspace) -> set[str]:
    """The name of every batch folder under monitor.landing, sealed or not."""
    location = landing_location(ws)
    if isinstance(location, str):
        return set(open_store(location).folders())
    return {p.name for p in location.iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if location.is_dir() else set()


def local_copy(ws: Workspace, batch: Batch) -> Path:
    """The batch's folder on this disk: itself, or its copy fetched from object storage (made once)."""
    location = landing_location(ws)
    if isinstance(location, str):
        return open_store(location).fetch(batch.name, landing_folder(ws))
    return batch.path


def new_batches(ws: Workspace) -> list[Batch]:
    """Complete batches the ledger has not recorded."""
    seen = ledger(ws).entries()
    return [b for b in complete_batches(ws) if b.name not in seen]


def find_batch(ws: Workspace, name: str) -> Batch:
    """The named batch; DataError when it is missing or not complete (its manifest not there yet)."""
    location, manifest = landing_location(ws), ws.params.monitor.manifest
    path = landing_folder(ws) / name
    where = f"{location}/{name}" if isinstance(location, str) else str(path)
    if Path(name).name != name or name.startswith(".") or name not in batch_folders(ws):
        raise DataError(f"batch {name!r}: no folder {where}. A batch is a folder under monitor.landing "
                        f"({ws.params.monitor.landing}).")
    sealed = open_store(location).is_sealed(name, manifest) if isinstance(location, str) \
        else (path / manifest).is_file()
    if not sealed:
        raise DataError(f"batch {name!r} is not complete: {where}/{manifest} is missing. Copy the manifest file "
                        "last, once every image and label is in place.")
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
    local_copy(ws, batch)
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
    """`{"batches": {name: entry}}` in one json file (or object, at a URL); updates of a file hold a file lock, so
    concurrent checks on one machine keep both."""

    def __init__(self, path: Path | str) -> None:
        self.path = path if isinstance(path, str) and is_url(path) else Path(path)

    def _text(self) -> str | None:
        if isinstance(self.path, Path):
            return self.path.read_text(encoding="utf-8") if self.path.is_file() else None
        store = open_store(self.path)
        try:
            return bytes(store.fs.cat_file(store.root)).decode()
        except FileNotFoundError:
            return None

    def _write(self, batches: dict[str, Any]) -> None:
        data = {"batches": dict(sorted(batches.items()))}
        if isinstance(self.path, Path):
            write_json(self.path, data)
        else:  # one PUT: a reader sees the old object or the new, whole
            store = open_store(self.path)
            store.fs.pipe_file(store.root, (json.dumps(data, indent=2) + "\n").encode())

    def _lock(self) -> Any:
        from contextlib import nullcontext

        from filelock import FileLock

        return FileLock(str(self.path) + ".lock") if isinstance(self.path, Path) else nullcontext()

    def entries(self) -> dict[str, dict[str, Any]]:
        try:
            text = self._text()
            if text is None:
                return {}
            data = json.loads(text)
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path}: the batch ledger is unreadable ({exc}). Fix or delete it (every "
                            "complete batch is then checked again).") from None
        batches = data.get("batches") if isinstance(data, dict) else None
        if not isinstance(batches, dict):
            raise DataError(f"{self.path}: not a batch ledger (no `batches` mapping). Fix or delete it.")
        return batches

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Add or replace the entry of batch `name`, stamped with the time it was recorded."""
        with self._lock():
            batches = self.entries()
            batches[name] = {**entry, "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            self._write(batches)

    def update(self, name: str, **fields: Any) -> None:
        """Merge `fields` into the entry of batch `name`, keeping what it holds; a batch the ledger lacks is left
        out (an entry would mark it checked, and it is not)."""
        with self._lock():
            batches = self.entries()
            if name not in batches:
                return
            batches[name] = {**batches[name], **fields}
            self._write(batches)


def ledger(ws: Workspace) -> Ledger:
    location = landing_location(ws)
    return Ledger(f"{location}/ledger.json" if isinstance(location, str) else ws.output("monitor", "ledger"))
