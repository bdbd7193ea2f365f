"""Writing batches into the landing folder as its reader (`monitoring.batches`) expects them: one folder per writer,
images and their answer lines first, the manifest last and atomically, so an unsealed folder is never read; and
sealing the batches a writer left open when it died.

The server's capture writes through this (one open batch per process, named by host, pid and the time it opened,
so no two writers ever share a folder); a killed pod never comes back to its own folder, so any writer seals an
unsealed batch once it is old enough, after dropping what was cut off mid-write (an image without its answer line,
a half-written line): no captured image is left unread, and none is read without its answer.

On object storage (`monitoring.landing.Store`) there is no append and no rename: each image is followed by its
answer as an object of its own (`.answers/<image>.json`, hidden from readers), and sealing writes
`predictions.jsonl` from them, then the manifest; a stale batch is sealed from the answers that made it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detops.monitoring.landing import Store, is_url, open_store
from detops.monitoring.predictions import CAPTURED_ANSWERS

log = logging.getLogger("detops.serve")
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
STAMP = "%Y%m%dT%H%M%S%fZ"
FOLDER = re.compile(r"capture-.+-\d+-(?P<stamp>\d{8}T\d{12}Z)")
ANSWERS = ".answers"  # on object storage: one answer object per image, until the seal gathers them


def image_file(data: bytes) -> tuple[bytes, str]:
    """The bytes to save and their suffix: the client's own file when a batch reader takes its format, else the
    image re-encoded as PNG (pixels kept, so the drift check still sees what the model saw)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        known = SUFFIXES.get(str(img.format))
        if known:
            return data, known
        out = io.BytesIO()
        img.save(out, format="PNG")
        return out.getvalue(), ".png"


def manifest_text(images: int, sealed_by: str) -> str:
    return json.dumps({"images": images, "source": "detops serve", "sealed_by": sealed_by})


def write_manifest(folder: Path, manifest: str, images: int, sealed_by: str) -> None:
    """The manifest, written last and atomically (a reader sees it whole or not at all)."""
    tmp = folder / f".{manifest}.tmp-{os.getpid()}-{threading.get_ident()}"
    tmp.write_text(manifest_text(images, sealed_by), encoding="utf-8")
    os.replace(tmp, folder / manifest)


def new_folder_name() -> str:
    """This writer's next batch folder: host, pid and the time, so no two writers share one."""
    return f"capture-{socket.gethostname()}-{os.getpid()}-{datetime.now(timezone.utc).strftime(STAMP)}"


def image_name(sequence: int, answer: dict[str, Any], data: bytes) -> tuple[str, bytes]:
    """The file name of the batch's `sequence`th image (with its request id, for a person looking) and its bytes."""
    rid = str(answer.get("request_id") or "").replace(":", "_")[:64]
    content, suffix = image_file(data)
    return f"{sequence:06d}{'-' + rid if rid else ''}{suffix}", content


class OpenBatch:
    """This writer's batch folder: opened at its first image, sealed by `seal` (the next image opens another)."""

    def __init__(self, landing: Path, manifest: str) -> None:
        self.landing, self.manifest = landing, manifest
        self.folder: Path | None = None
        self.count = 0
        self.opened = 0.0  # time.monotonic() of the first image
        self._sequence = 0

    def add(self, data: bytes, answer: dict[str, Any]) -> None:
        """Save one image and its answer line (with `file_name` added); no image is left without its line."""
        if self.folder is not None and ((self.folder / self.manifest).exists() or not self.folder.is_dir()):
            self.folder = None  # sealed (or removed) by another writer while this one could not write: open another
        if self.folder is None:
            folder = self.landing / new_folder_name()
            folder.mkdir(parents=True)  # exist_ok=False: a folder another writer made is never shared
            self.folder, self.count, self.opened = folder, 0, time.monotonic()
        self._sequence += 1
        name, content = image_name(self._sequence, answer, data)
        (self.folder / name).write_bytes(content)
        try:
            with (self.folder / CAPTURED_ANSWERS).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"file_name": name, **answer}) + "\n")
        except OSError:
            (self.folder / name).unlink(missing_ok=True)
            raise
        self.count += 1

    def seal_stale(self, stale_seconds: float) -> int:
        """Seal the batches other writers left open (`seal_stale`); how many."""
        return seal_stale(self.landing, self.manifest, stale_seconds, skip=self.folder)

    def seal(self) -> None:
        """Write the manifest (last): from now on the drift check reads the batch."""
        assert self.folder is not None
        write_manifest(self.folder, self.manifest, self.count, self.folder.name)
        log.info("capture: sealed %s (%d images)", self.folder, self.count)
        self.folder, self.count = None, 0


class StoredBatch:
    """This writer's batch on object storage, as `OpenBatch` is on a disk: each image, then its answer object;
    `seal` writes the answer lines, then the manifest."""

    def __init__(self, store: Store, manifest: str) -> None:
        self.store, self.manifest = store, manifest
        self.folder: str | None = None  # the batch folder's name
        self.count = 0
        self.opened = 0.0
        self._sequence = 0
        self._lines: list[str] = []

    def add(self, data: bytes, answer: dict[str, Any]) -> None:
        """Save one image, then its answer object: an image without one is dropped when a stale batch is sealed."""
        fs = self.store.fs
        if self.folder is not None and fs.exists(self.store.path(self.folder, self.manifest)):
            self.folder = None  # sealed by another writer while this one could not write: open another
        if self.folder is None:
            self.folder, self.count, self.opened, self._lines = new_folder_name(), 0, time.monotonic(), []
        self._sequence += 1
        name, content = image_name(self._sequence, answer, data)
        line = json.dumps({"file_name": name, **answer})
        fs.pipe_file(self.store.path(self.folder, name), content)
        fs.pipe_file(self.store.path(self.folder, ANSWERS, name + ".json"), line.encode())
        self._lines.append(line)
        self.count += 1

    def seal_stale(self, stale_seconds: float) -> int:
        return seal_stale_stored(self.store, self.manifest, stale_seconds, skip=self.folder)

    def seal(self) -> None:
        assert self.folder is not None
        _seal_stored(self.store, self.folder, self.manifest, self._lines, self.folder)
        log.info("capture: sealed %s (%d images)", self.store.path(self.folder), self.count)
        self.folder, self.count, self._lines = None, 0, []


def open_batch(landing: Path | str, manifest: str) -> OpenBatch | StoredBatch:
    """A writer's batch under `landing`: a folder here, or an fsspec URL (object storage)."""
    return StoredBatch(open_store(str(landing)), manifest) if is_url(landing) else OpenBatch(Path(landing), manifest)


def _seal_stored(store: Store, folder: str, manifest: str, lines: list[str], sealed_by: str) -> None:
    store.fs.pipe_file(store.path(folder, CAPTURED_ANSWERS), "".join(line + "\n" for line in lines).encode())
    store.fs.pipe_file(store.path(folder, manifest), manifest_text(len(lines), sealed_by).encode())


def seal_stale_stored(store: Store, manifest: str, stale_seconds: float, skip: str | None = None) -> int:
    """`seal_stale` on object storage: each old unsealed capture batch is sealed with the images whose answer
    object made it; the others are removed, and a batch with none is removed whole."""
    now, sealed = datetime.now(timezone.utc), 0
    try:
        names = set(store.folders()) - set(store.sealed(manifest))
    except OSError:
        return 0
    for name in sorted(names):
        found = FOLDER.fullmatch(name)
        if not found or name == skip:
            continue
        if _age(found, now) < stale_seconds:
            continue
        try:
            images = _seal_stored_stale(store, name, manifest)
        except OSError as exc:
            log.warning("capture: could not seal the stale batch %s (%s)", store.path(name), exc)
            continue
        if images:
            log.warning("capture: sealed %s, left open by a writer that stopped (%d images)", store.path(name), images)
            sealed += 1
    return sealed


def _seal_stored_stale(store: Store, name: str, manifest: str) -> int:
    fs = store.fs
    files = {str(p).rsplit("/", 1)[-1] for p in fs.find(store.path(name))}
    lines = []
    for part in sorted(fs.find(store.path(name, ANSWERS))):
        try:
            line = fs.cat_file(part).decode()
            image = json.loads(line)["file_name"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if isinstance(image, str) and image in files:
            lines.append(line)
    kept = {json.loads(line)["file_name"] for line in lines}
    for path in fs.find(store.path(name)):
        if not str(path).startswith(store.path(name, ANSWERS) + "/") and str(path).rsplit("/", 1)[-1] not in kept:
            fs.rm_file(path)
    if not lines:
        fs.rm(store.path(name), recursive=True)
        return 0
    _seal_stored(store, name, manifest, lines, f"{socket.gethostname()}-{os.getpid()} (stale)")
    return len(lines)


def seal_stale(landing: Path, manifest: str, stale_seconds: float, skip: Path | None = None) -> int:
    """Seal every unsealed capture batch (of any writer but `skip`) opened more than `stale_seconds` ago: its writer
    died with it open. A folder that cannot be sealed is logged and left. Returns how many were sealed."""
    try:
        folders = list(landing.iterdir())
    except OSError:  # no landing folder yet (or unreadable: the next write says so)
        return 0
    now, sealed = datetime.now(timezone.utc), 0
    for folder in folders:
        found = FOLDER.fullmatch(folder.name)
        if not found or folder == skip or (folder / manifest).exists() or not folder.is_dir():
            continue
        if _age(found, now) < stale_seconds:
            continue
        try:
            images = _repair(folder)
            if images is not None:
                write_manifest(folder, manifest, images, f"{socket.gethostname()}-{os.getpid()} (stale)")
        except OSError as exc:  # another writer sealing it at the same time, or not ours to write
            log.warning("capture: could not seal the stale batch %s (%s)", folder, exc)
            continue
        if images is not None:
            log.warning("capture: sealed %s, left open by a writer that stopped (%d images)", folder, images)
            sealed += 1
    return sealed


def _age(found: re.Match[str], now: datetime) -> float:
    """Seconds since a capture folder (its name matched by FOLDER) was opened."""
    return (now - datetime.strptime(found["stamp"], STAMP).replace(tzinfo=timezone.utc)).total_seconds()


def _repair(folder: Path) -> int | None:
    """The answer lines that parse and name an image there; other files removed. None when nothing was captured:
    the empty folder is removed instead."""
    answers = folder / CAPTURED_ANSWERS
    lines: dict[str, str] = {}
    if answers.is_file():
        for line in answers.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                name = json.loads(line)["file_name"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(name, str) and Path(name).name == name and (folder / name).is_file():
                lines[name] = line
    for path in folder.iterdir():
        if path.name not in lines and path.name != CAPTURED_ANSWERS and path.is_file():
            path.unlink(missing_ok=True)
    if not lines:
        answers.unlink(missing_ok=True)
        folder.rmdir()
        return None
    tmp = folder / f".{CAPTURED_ANSWERS}.tmp-{os.getpid()}"
    tmp.write_text("".join(line + "\n" for line in lines.values()), encoding="utf-8")
    os.replace(tmp, answers)
    return len(lines)
