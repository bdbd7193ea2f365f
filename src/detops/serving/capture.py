"""Capture: a share of the served images, with the champion's answers, saved as batches the drift check reads.

Which requests: a hash of the request id against `serve.capture_share` (as the canary chooses), so a request id
always gets the same answer to "was it captured?". Where: one open batch folder per worker process under
`monitor.landing`, named by host, pid and start time, so no two writers ever share one. Each image keeps the bytes
the client sent (the feature cache and a labeller see exactly what the model saw); `predictions.jsonl`
(`monitoring.predictions.CAPTURED_ANSWERS`) holds one answer per line. The batch is sealed (the manifest, written
last, as a delivery would) when it holds `serve.capture_batch_size` images or `serve.capture_max_minutes` have
passed since its first image: an unsealed folder is never read.

A response never waits for capture: the server only offers the bytes and the answer to a queue bounded in bytes
(serve.capture_queue_mb; a full queue drops the image, counted) and one thread writes. An OSError while writing (a
full disk, ENOSPC; a folder that cannot be made) pauses capture: the images offered meanwhile are dropped (counted),
and a write is tried again after a back-off (1 s, doubling up to a minute); the gap's seconds are counted.
`close()` (the server's shutdown: SIGTERM, SIGINT) writes what is queued and seals the open batch. A batch whose
process died unsealed (a killed pod: its host name and pid never come back) is sealed by any writer once it is
`capture_max_minutes` plus a grace old, so no captured image is left unread.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detops.config.serve import ServeParams
from detops.monitoring.predictions import CAPTURED_ANSWERS
from detops.serving.bounded import ByteBoundedQueue
from detops.serving.metrics import metrics
from detops.serving.routing import share_point

log = logging.getLogger("detops.serve")
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
ANSWER_BYTES = 4096  # what one queued answer (a dict of a few boxes) costs beside the image's bytes, generously
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0  # after a write error, the wait before the next try (doubling)
STALE_GRACE_S = 300.0  # past capture_max_minutes, how long an unsealed batch waits before another writer seals it
SWEEP_EVERY_S = 60.0  # how often a writer looks for such batches (and once at its start)
CLOSE_TIMEOUT_S = 20.0  # at shutdown, the longest close() waits for the queue and the seal (the pod's grace has it)
STAMP = "%Y%m%dT%H%M%S%fZ"
FOLDER = re.compile(r"capture-.+-\d+-(?P<stamp>\d{8}T\d{12}Z)")


def captured(request_id: str, share: float) -> bool:
    """Whether a request is captured: its id's point, independent of the canary's and the shadow's, below share."""
    return share > 0 and share_point(request_id, "capture") < share


@dataclass(frozen=True)
class Capture:
    """One served image: the bytes the client sent and the answer's JSON body."""

    data: bytes
    answer: dict[str, Any]


@dataclass(frozen=True)
class CaptureStats:
    """What capture did in this process, for /metrics: images saved, dropped (full queue, or offered while capture
    was paused or closed), batches sealed (stale ones of other writers included), write errors and the seconds
    capture could not write (the gaps, the current one included)."""

    saved: int
    dropped: int
    batches: int
    write_errors: int
    unwritable_seconds: float


def image_file(data: bytes) -> tuple[bytes, str]:
    """The bytes to save and their suffix: the client's own file when a batch reader takes its format, else the
    image re-encoded as PNG (pixels kept, so the drift check still sees what the model saw)."""
    import io

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


class CaptureWriter:
    """Writes offered captures into this process's open batch and seals it; pauses on an OSError, tries again.

    `start()` starts the writer thread; `close()` stops it: the queue is written, the open batch sealed.
    """

    def __init__(self, landing: Path, manifest: str, batch_size: int, max_minutes: float, score_threshold: float,
                 *, queue_mb: float = ServeParams.model_fields["capture_queue_mb"].default,
                 grace_s: float = STALE_GRACE_S) -> None:
        self.landing = Path(landing)
        self.manifest = manifest
        self.batch_size = batch_size
        self.max_seconds = max_minutes * 60.0
        self.score_threshold = score_threshold
        self.stale_seconds = self.max_seconds + grace_s
        self._queue: ByteBoundedQueue[Capture] = ByteBoundedQueue(int(queue_mb * 2**20))
        self._folder: Path | None = None
        self._count = 0
        self._opened = 0.0
        self._sequence = 0
        self._next_sweep = 0.0
        self._lock = threading.Lock()  # the counts, read by stats() from another thread
        self._saved = self._dropped = self._batches = self._errors = 0
        self._gaps = 0.0  # seconds unwritable, counted up to _gap_mark
        self._unwritable_since: float | None = None
        self._gap_mark = 0.0
        self._retry_at = 0.0
        self._backoff = FIRST_BACKOFF_S
        self._thread = threading.Thread(target=self._run, name="detops-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, capture: Capture) -> None:
        """Called after the answer is made: never blocks. Dropped (counted) while capture is paused by a write
        error (one offer per back-off goes through, to try again), when the queue's bytes are full, or once closed."""
        if self._unwritable_since is not None and time.monotonic() < self._retry_at:
            self._drop("unwritable")
        elif not self._queue.put(capture, len(capture.data) + ANSWER_BYTES):
            self._drop("stopped" if self._queue.closed else "dropped")
        elif self._unwritable_since is not None:
            self._retry_at = time.monotonic() + self._backoff  # this one is the next try: the rest wait for it

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop capture: what is queued is written and the open batch sealed (its manifest last), then the writer
        thread ends. For the server's shutdown (SIGTERM/SIGINT); waits at most `timeout` seconds for a slow disk;
        a second call does nothing."""
        self._queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture: the writer did not finish within %.0f s; the open batch may stay unsealed "
                            "until another writer seals it", timeout)
        elif self._thread.ident is None:  # never started: finish here
            self._finish()

    def stats(self) -> CaptureStats:
        with self._lock:
            gap = 0.0 if self._unwritable_since is None else time.monotonic() - self._gap_mark
            return CaptureStats(self._saved, self._dropped, self._batches, self._errors, self._gaps + gap)

    def _count_gap(self) -> None:
        """Add the seconds unwritable since the last count (called at least every second while paused)."""
        with self._lock:
            if self._unwritable_since is None:
                return
            now = time.monotonic()
            gap, self._gap_mark = now - self._gap_mark, now
            self._gaps += gap
        metrics().capture_unwritable.inc(gap)

    def _drop(self, outcome: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._dropped += n
            metrics().captures.labels(outcome).inc(n)

    # --- the writer thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + SWEEP_EVERY_S
                self.seal_stale()
            item = self._queue.get(timeout=self._wait())
            if item is None and self._queue.closed:
                break
            self._attempt(item)
        self._finish()

    def _finish(self) -> None:
        """What is still queued, written (or dropped while unwritable), then the open batch sealed."""
        while (item := self._queue.get(timeout=0)) is not None:
            self._attempt(item)
        if self._folder is not None:
            try:
                self.seal()
            except OSError as exc:
                self._failed(exc, lost=0)
        self._count_gap()

    def _attempt(self, item: Capture | None) -> None:
        """Write `item` (if any) and seal what is due; paused by a write error: only try again
        with an item or once the back-off has passed."""
        self._count_gap()
        if item is None and self._unwritable_since is not None and time.monotonic() < self._retry_at:
            return
        saved = self._saved
        try:
            if item is not None:
                self.write(item)
            self.seal_if_due()
        except OSError as exc:
            self._failed(exc, lost=int(item is not None and self._saved == saved))
        except Exception:  # a bad capture costs that capture only
            log.exception("capture: an image could not be saved")
            self._drop("failed")

    def _wait(self) -> float:
        """Sleep until the next capture, or until the open batch is due by time (checked at least every second)."""
        if self._folder is None:
            return 1.0
        return max(0.05, min(1.0, self._opened + self.max_seconds - time.monotonic()))

    def write(self, capture: Capture) -> None:
        """Save one image and its answer into the open batch (opened on the first image); seal it when full."""
        if self._folder is not None and ((self._folder / self.manifest).exists() or not self._folder.is_dir()):
            self._folder = None  # sealed (or removed) by another writer while this one could not write: open another
        if self._folder is None:
            self._open()
        assert self._folder is not None
        self._sequence += 1
        rid = str(capture.answer.get("request_id") or "").replace(":", "_")[:64]
        data, suffix = image_file(capture.data)
        name = f"{self._sequence:06d}{'-' + rid if rid else ''}{suffix}"
        (self._folder / name).write_bytes(data)
        line = {"file_name": name, "request_id": capture.answer.get("request_id"),
                "model": capture.answer.get("model"), "score_threshold": self.score_threshold,
                "detections": capture.answer.get("detections", []),
                "captured_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        try:
            with (self._folder / CAPTURED_ANSWERS).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        except OSError:
            (self._folder / name).unlink(missing_ok=True)  # no image without its answer
            raise
        self._count += 1
        self._written()
        if self._count >= self.batch_size:
            self.seal()

    def _written(self) -> None:
        """A write went through: count it, and end a gap if there was one."""
        self._count_gap()
        with self._lock:
            self._saved += 1
            since, self._unwritable_since = self._unwritable_since, None
            gap = 0.0 if since is None else time.monotonic() - since
        metrics().captures.labels("saved").inc()
        if since is not None:
            self._backoff = FIRST_BACKOFF_S
            log.warning("capture resumed under %s after %.1f s unwritable", self.landing, gap)

    def _failed(self, exc: OSError, lost: int) -> None:
        """Pause capture: `lost` (the image being written, if it was) and the queued images are dropped (counted);
        the next try after the back-off."""
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        with self._lock:
            self._errors += 1
            first = self._unwritable_since is None
            if first:
                self._unwritable_since = self._gap_mark = time.monotonic()
        if first:
            metrics().capture_failures.labels(reason).inc()
            log.error("capture paused: cannot write under %s (%s); serving goes on, capture tries again with "
                      "back-off", self.landing, exc)
        else:
            self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)
        self._retry_at = time.monotonic() + self._backoff
        self._drop("unwritable", len(self._queue.drain()) + lost)

    def seal_if_due(self) -> None:
        if self._folder is not None and time.monotonic() - self._opened >= self.max_seconds:
            self.seal()

    def seal(self) -> None:
        """Write the manifest (last): from now on the drift check reads the batch. The next image opens another."""
        assert self._folder is not None
        write_manifest(self._folder, self.manifest, self._count, self._folder.name)
        log.info("capture: sealed %s (%d images)", self._folder, self._count)
        self._sealed()
        self._folder, self._count = None, 0

    def _sealed(self) -> None:
        with self._lock:
            self._batches += 1
        metrics().capture_batches.inc()

    def seal_stale(self) -> None:
        """Seal every unsealed capture batch (of any writer) opened more than capture_max_minutes plus the grace
        ago: its writer died with it open. Images without an answer line (cut off mid-write) are removed first.
        A folder that cannot be sealed is logged and left; it never pauses this writer's own capture."""
        try:
            folders = list(self.landing.iterdir())
        except OSError:  # no landing folder yet (or unreadable: the next write says so)
            return
        now = datetime.now(timezone.utc)
        for folder in folders:
            found = FOLDER.fullmatch(folder.name)
            if not found or folder == self._folder or (folder / self.manifest).exists() or not folder.is_dir():
                continue
            opened = datetime.strptime(found["stamp"], STAMP).replace(tzinfo=timezone.utc)
            if (now - opened).total_seconds() < self.stale_seconds:
                continue
            try:
                images = self._repair(folder)
                if images is not None:
                    write_manifest(folder, self.manifest, images, f"{socket.gethostname()}-{os.getpid()} (stale)")
            except OSError as exc:  # another writer sealing it at the same time, or not ours to write: not a gap
                log.warning("capture: could not seal the stale batch %s (%s)", folder, exc)
                continue
            if images is not None:
                log.warning("capture: sealed %s, left open by a writer that stopped (%d images)", folder, images)
                self._sealed()

    def _repair(self, folder: Path) -> int | None:
        """The answer lines that parse and name an image there; other files (an image cut off before its answer,
        a half-written line) removed. None when nothing was captured: the empty folder is removed instead."""
        answers = folder / CAPTURED_ANSWERS
        lines: list[str] = []
        if answers.is_file():
            for line in answers.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    name = json.loads(line)["file_name"]
                except (ValueError, KeyError, TypeError):
                    continue
                if isinstance(name, str) and Path(name).name == name and (folder / name).is_file():
                    lines.append(line)
        keep = {json.loads(line)["file_name"] for line in lines} | {CAPTURED_ANSWERS}
        for path in folder.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)
        if not lines:
            answers.unlink(missing_ok=True)
            folder.rmdir()
            return None
        tmp = folder / f".{CAPTURED_ANSWERS}.tmp-{os.getpid()}"
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, answers)
        return len(lines)

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime(STAMP)
        folder = self.landing / f"capture-{socket.gethostname()}-{os.getpid()}-{stamp}"
        folder.mkdir(parents=True)  # exist_ok=False: a folder another writer made is never shared
        self._folder, self._count, self._opened = folder, 0, time.monotonic()
