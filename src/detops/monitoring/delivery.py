"""Writing batches into the landing folder as its reader (`monitoring.batches`) expects them: one folder per writer,
images and their answer lines first, the manifest last and atomically, so an unsealed folder is never read; and
sealing the batches a writer left open when it died.

The server's capture writes through this (one open batch per process, named by host, pid and the time it opened,
so no two writers ever share a folder); a killed pod never comes back to its own folder, so any writer seals an
unsealed batch once it is old enough, after dropping what was cut off mid-write (an image without its answer line,
a half-written line): no captured image is left unread, and none is read without its answer.
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

from detops.monitoring.predictions import CAPTURED_ANSWERS

log = logging.getLogger("detops.serve")
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
STAMP = "%Y%m%dT%H%M%S%fZ"
FOLDER = re.compile(r"capture-.+-\d+-(?P<stamp>\d{8}T\d{12}Z)")


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


def write_manifest(folder: Path, manifest: str, images: int, sealed_by: str) -> None:
    """The manifest, written last and atomically (a reader sees it whole or not at all)."""
    tmp = folder / f".{manifest}.tmp-{os.getpid()}-{threading.get_ident()}"
    tmp.write_text(json.dumps({"images": images, "source": "detops serve", "sealed_by": sealed_by}),
                   encoding="utf-8")
    os.replace(tmp, folder / manifest)


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
            stamp = datetime.now(timezone.utc).strftime(STAMP)
            folder = self.landing / f"capture-{socket.gethostname()}-{os.getpid()}-{stamp}"
            folder.mkdir(parents=True)  # exist_ok=False: a folder another writer made is never shared
            self.folder, self.count, self.opened = folder, 0, time.monotonic()
        self._sequence += 1
        rid = str(answer.get("request_id") or "").replace(":", "_")[:64]
        content, suffix = image_file(data)
        name = f"{self._sequence:06d}{'-' + rid if rid else ''}{suffix}"
        (self.folder / name).write_bytes(content)
        try:
            with (self.folder / CAPTURED_ANSWERS).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"file_name": name, **answer}) + "\n")
        except OSError:
            (self.folder / name).unlink(missing_ok=True)
            raise
        self.count += 1

    def seal(self) -> None:
        """Write the manifest (last): from now on the drift check reads the batch."""
        assert self.folder is not None
        write_manifest(self.folder, self.manifest, self.count, self.folder.name)
        log.info("capture: sealed %s (%d images)", self.folder, self.count)
        self.folder, self.count = None, 0


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
        opened = datetime.strptime(found["stamp"], STAMP).replace(tzinfo=timezone.utc)
        if (now - opened).total_seconds() < stale_seconds:
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
