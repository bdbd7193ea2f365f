"""Capture: a share of the served images, with the champion's answers, saved as batches the drift check reads.

Which requests: a hash of the request id against `serve.capture_share` (as the canary chooses), so a request id
always gets the same answer to "was it captured?". Where: this process's open batch under `monitor.landing`
(`monitoring.delivery`: one folder per writer, the manifest last). Each image keeps the bytes the client sent (the
feature cache and a labeller see exactly what the model saw), with its answer line in `predictions.jsonl`. The batch
is sealed when it holds `serve.capture_batch_size` images or `serve.capture_max_minutes` have passed since its first.

A response never waits for capture: the server only offers the bytes and the answer to a queue bounded in bytes
(serve.capture_queue_mb; a full queue drops the image, counted) and one thread writes. An OSError while writing (a
full disk, ENOSPC; a folder that cannot be made) pauses capture: the images offered meanwhile are dropped (counted),
and a write is tried again after a back-off (1 s, doubling up to a minute); the gap's seconds are counted.
`close()` (the server's shutdown: SIGTERM, SIGINT) writes what is queued and seals the open batch. Batches other
writers left open (a killed pod) are sealed once `capture_max_minutes` plus a grace old, so no image is left unread.
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from detops.config.serve import ServeParams
from detops.monitoring.delivery import open_batch
from detops.serving.metrics import metrics
from detops.serving.routing import share_point

log = logging.getLogger("detops.serve")
ANSWER_BYTES = 4096  # what one queued answer (a dict of a few boxes) costs beside the image's bytes, generously
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0  # after a write error, the wait before the next try (doubling)
STALE_GRACE_S = 300.0  # past capture_max_minutes, how long an unsealed batch waits before another writer seals it
SWEEP_EVERY_S = 60.0  # how often a writer looks for such batches (and once at its start)
CLOSE_TIMEOUT_S = 20.0  # at shutdown, the longest close() waits for the queue and the seal (the pod's grace has it)


def captured(request_id: str, share: float) -> bool:
    """Whether a request is captured: its id's point, independent of the canary's and the shadow's, below share."""
    return share > 0 and share_point(request_id, "capture") < share


@dataclass(frozen=True)
class Capture:
    """One served image: the bytes the client sent and the answer's JSON body."""

    data: bytes
    answer: dict[str, Any]


class CaptureWriter:
    """Writes offered captures into this process's open batch and seals it; pauses on an OSError, tries again.
    `start()` starts the writer thread; `close()` writes the queue, seals the open batch and ends it. What it did
    is counted in /metrics only (`detops_serve_capture_*`)."""

    def __init__(self, landing: Path | str, manifest: str, batch_size: int, max_minutes: float,
                 score_threshold: float, *, queue_mb: float = ServeParams.model_fields["capture_queue_mb"].default,
                 grace_s: float = STALE_GRACE_S) -> None:
        self.landing, self.manifest = landing, manifest  # a folder, or an fsspec URL (object storage)
        self.batch_size, self.max_seconds, self.score_threshold = batch_size, max_minutes * 60.0, score_threshold
        self.stale_seconds = self.max_seconds + grace_s
        self.batch = open_batch(landing, manifest)
        self.max_bytes, self.queued_bytes = int(queue_mb * 2**20), 0  # bound and size of the queue, in bytes
        self._queue: queue.Queue[Capture | None] = queue.Queue()  # None: wakes the thread at close
        self._lock = threading.Lock()  # guards queued_bytes
        self._closed = threading.Event()
        self._paused_at: float | None = None  # while unwritable: when the gap was last counted
        self._backoff = FIRST_BACKOFF_S
        self.saved = 0  # images written by this writer
        self._thread = threading.Thread(target=self._run, name="detops-capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, capture: Capture) -> None:
        """Never blocks: dropped (counted) when the queue's bytes are full, or once closed."""
        with self._lock:
            refused = "stopped" if self._closed.is_set() else None
            if not refused and self.queued_bytes + len(capture.data) + ANSWER_BYTES > self.max_bytes:
                refused = "dropped"
            if not refused:
                self.queued_bytes += len(capture.data) + ANSWER_BYTES
                self._queue.put(capture)
        if refused:
            metrics().captures.labels(refused).inc()

    def _take(self, timeout: float | None) -> Capture | None:
        """The oldest queued capture (blocking up to `timeout`; 0: never), or None."""
        try:
            item = self._queue.get(timeout=timeout) if timeout != 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if item is not None:
            with self._lock:
                self.queued_bytes -= len(item.data) + ANSWER_BYTES
        return item

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop capture (waiting at most `timeout` seconds for a slow disk); a second call does nothing."""
        with self._lock:
            self._closed.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture: the writer did not finish within %.0f s; the open batch may stay unsealed "
                            "until another writer seals it", timeout)
        elif self._thread.ident is None:  # never started: finish here
            self._run()

    def _count_gap(self, resumed: bool = False) -> None:
        """Add the seconds unwritable since the gap was last counted (at least every second while paused)."""
        if self._paused_at is not None:
            now = time.monotonic()
            metrics().capture_unwritable.inc(now - self._paused_at)
            self._paused_at = None if resumed else now

    def _run(self) -> None:
        """Write what comes, seal what is due (a last time once closed); after a write error, wait the back-off."""
        next_sweep, wait = 0.0, 0.0
        while not (self._closed.is_set() and self._queue.empty()):
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_EVERY_S
                metrics().capture_batches.inc(self.batch.seal_stale(self.stale_seconds))
            if wait:
                self._closed.wait(wait)  # the back-off, cut short by close()
            due = self.batch.opened + self.max_seconds - time.monotonic() if self.batch.folder else 1.0
            wait = self._attempt(self._take(max(0.05, min(1.0, due))))
        if self.batch.folder is not None:
            self._attempt(None, seal=True)
        self._count_gap()

    def _attempt(self, item: Capture | None, seal: bool = False) -> float:
        """Write `item` (if any) and seal what is due; the seconds to wait before the next try (0 unless it
        failed)."""
        self._count_gap()
        saved = self.saved
        try:
            if item is not None:
                self.write(item)
            if self.batch.folder is not None and (seal or time.monotonic() - self.batch.opened >= self.max_seconds):
                self.seal()
        except OSError as exc:
            return self._failed(exc, lost=int(item is not None and self.saved == saved))
        except Exception:  # a bad capture costs that capture only
            log.exception("capture: an image could not be saved")
            metrics().captures.labels("failed").inc()
        return 0.0

    def write(self, capture: Capture) -> None:
        """Save one image and its answer into the open batch; seal it when full."""
        answer = capture.answer
        self.batch.add(capture.data, {
            "request_id": answer.get("request_id"), "model": answer.get("model"),
            "score_threshold": self.score_threshold, "detections": answer.get("detections", []),
            "captured_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")})
        self.saved += 1
        metrics().captures.labels("saved").inc()
        if self._paused_at is not None:
            self._count_gap(resumed=True)
            self._backoff = FIRST_BACKOFF_S
            log.warning("capture resumed under %s", self.landing)
        if self.batch.count >= self.batch_size:
            self.seal()

    def seal(self) -> None:
        self.batch.seal()
        metrics().capture_batches.inc()

    def _failed(self, exc: OSError, lost: int) -> float:
        """Pause capture: `lost` (the image being written) and the queued images are dropped (counted); returns
        the back-off (doubling from the second failure of a gap)."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            metrics().capture_failures.labels(errno.errorcode.get(exc.errno or 0, type(exc).__name__)).inc()
            log.error("capture paused: cannot write under %s (%s); serving goes on, capture tries again with "
                      "back-off", self.landing, exc)
        else:
            self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)
        while self._take(0) is not None:
            lost += 1
        metrics().captures.labels("unwritable").inc(lost)
        return self._backoff
