"""Capture: a share of the served images, with the champion's answers, saved as batches the drift check reads.

Which requests: a hash of the request id against `serve.capture_share` (as the canary chooses), so a request id
always gets the same answer to "was it captured?". Where: one open batch folder per worker process under
`monitor.landing`, named by host, pid and start time, so no two writers ever share one. Each image keeps the bytes
the client sent (the feature cache and a labeller see exactly what the model saw); `predictions.jsonl`
(`monitoring.predictions.CAPTURED_ANSWERS`) holds one answer per line. The batch is sealed (the manifest, written
last, as a delivery would) when it holds `serve.capture_batch_size` images or `serve.capture_max_minutes` have
passed since its first image: an unsealed folder is never read.

A response never waits for capture: the worker only offers the bytes and the answer to a bounded queue (a full
queue drops the image, counted) and one thread writes. Any OSError while writing (a full disk, ENOSPC; a folder
that cannot be made) stops capture for this process, counted and logged; serving goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detops.monitoring.predictions import CAPTURED_ANSWERS
from detops.serving.metrics import metrics
from detops.serving.routing import share_point

log = logging.getLogger("detops.serve")
QUEUE_SIZE = 256  # captures waiting for the writer; more are dropped (counted), never waited for
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def captured(request_id: str, share: float) -> bool:
    """Whether a request is captured: its id's point, independent of the canary's and the shadow's, below share."""
    return share > 0 and share_point(request_id, "capture") < share


@dataclass(frozen=True)
class Capture:
    """One served image: the bytes the client sent and the answer's JSON body."""

    data: bytes
    answer: dict[str, Any]


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


class CaptureWriter:
    """Writes offered captures into this process's open batch and seals it; stops for good on an OSError."""

    def __init__(self, landing: Path, manifest: str, batch_size: int, max_minutes: float,
                 score_threshold: float) -> None:
        self.landing = Path(landing)
        self.manifest = manifest
        self.batch_size = batch_size
        self.max_seconds = max_minutes * 60.0
        self.score_threshold = score_threshold
        self.stopped = False
        self._queue: queue.Queue[Capture] = queue.Queue(QUEUE_SIZE)
        self._folder: Path | None = None
        self._count = 0
        self._opened = 0.0
        self._sequence = 0
        self._thread = threading.Thread(target=self._run, name="detops-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, capture: Capture) -> None:
        """Called by the worker after the answer is made: never blocks."""
        if self.stopped:
            metrics().captures.labels("stopped").inc()
            return
        try:
            self._queue.put_nowait(capture)
        except queue.Full:
            metrics().captures.labels("dropped").inc()

    # --- the writer thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stopped:
            try:
                item = self._queue.get(timeout=self._wait())
            except queue.Empty:
                item = None
            try:
                if item is not None:
                    self.write(item)
                self.seal_if_due()
            except OSError as exc:
                self.stop(exc)
            except Exception:  # a bad capture costs that capture only
                log.exception("capture: an image could not be saved")
                metrics().captures.labels("failed").inc()

    def _wait(self) -> float:
        """Sleep until the next capture, or until the open batch is due by time (checked at least every second)."""
        if self._folder is None:
            return 1.0
        return max(0.05, min(1.0, self._opened + self.max_seconds - time.monotonic()))

    def write(self, capture: Capture) -> None:
        """Save one image and its answer into the open batch (opened on the first image); seal it when full."""
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
        with (self._folder / CAPTURED_ANSWERS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        self._count += 1
        metrics().captures.labels("saved").inc()
        if self._count >= self.batch_size:
            self.seal()

    def seal_if_due(self) -> None:
        if self._folder is not None and time.monotonic() - self._opened >= self.max_seconds:
            self.seal()

    def seal(self) -> None:
        """Write the manifest (last): from now on the drift check reads the batch. The next image opens another."""
        assert self._folder is not None
        (self._folder / self.manifest).write_text(json.dumps({"images": self._count, "source": "detops serve"}),
                                                  encoding="utf-8")
        log.info("capture: sealed %s (%d images)", self._folder, self._count)
        metrics().capture_batches.inc()
        self._folder, self._count = None, 0

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = self.landing / f"capture-{socket.gethostname()}-{os.getpid()}-{stamp}"
        folder.mkdir(parents=True)  # exist_ok=False: a folder another writer made is never shared
        self._folder, self._count, self._opened = folder, 0, time.monotonic()

    def stop(self, exc: OSError) -> None:
        """Capture ends for this process (the open batch stays unsealed, so it is never read); serving goes on."""
        self.stopped = True
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        metrics().capture_failures.labels(reason).inc()
        log.error("capture stopped: cannot write under %s (%s); serving goes on without capture", self.landing, exc)
        while True:  # what is still queued will not be written
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            metrics().captures.labels("stopped").inc()
