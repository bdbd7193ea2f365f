"""The inference side of the server: the followed models, one request queue, and the thread that answers it.

The HTTP handler parses a request (`gate`), then `submit`s the image's bytes: a `Job` goes on a thread-safe queue
and the handler awaits an asyncio future. The inference thread blocks on the queue while idle (never polls), takes
what queued meanwhile, and waits up to `serve.batch_timeout` for more only when the previous batch held more than
one request (requests then arrive faster than one inference): light traffic meets no added latency, heavy traffic
forms full batches. Each batch is decoded (in parallel: PIL and OpenCV release the GIL), split by model (champion,
or the challenger for the canary share), run once per model, and answered through `call_soon_threadsafe`. ONNX
Runtime and OpenVINO release the GIL while they run, so HTTP parsing goes on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detops.inference.predictor import Detections
from detops.serving.capture import Capture, CaptureWriter, captured
from detops.serving.follow import Follower
from detops.serving.images import Rejected, decode
from detops.serving.loaded import LoadedModel
from detops.serving.metrics import metrics
from detops.serving.routing import assign
from detops.serving.settings import ServeSettings
from detops.serving.shadow import ShadowJob, ShadowRunner

log = logging.getLogger("detops.serve")
STOP = None  # put on the queue: the inference thread ends


@dataclass(frozen=True)
class Outcome:
    """One answer: status, json body and the headers naming the model that gave it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """One request on its way: the image file's bytes (then its pixels) and where its answer goes."""

    request_id: str
    data: bytes
    future: asyncio.Future[Outcome] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    queued: float = field(default_factory=time.monotonic)
    image: np.ndarray | None = None
    outcome: Outcome | None = None


def collect(jobs: queue.Queue[Job | None], max_batch: int, wait: float) -> list[Job | None]:
    """Block for the first job, take what queued meanwhile, and wait up to `wait` seconds more for the batch to
    fill (the caller passes 0 unless the previous batch held several). STOP ends a batch and is returned in it."""
    batch: list[Job | None] = [jobs.get()]
    deadline = time.monotonic() + wait
    while batch[-1] is not STOP and len(batch) < max_batch:
        remaining = deadline - time.monotonic()
        try:
            batch.append(jobs.get(timeout=remaining) if remaining > 0 else jobs.get_nowait())
        except queue.Empty:
            break
    return batch


class Engine:
    """The followers of the champion (and challenger), the request queue and its inference thread, shadows and
    capture."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.champion = Follower("champion", settings.champion, settings)
        self.challenger = Follower("challenger", settings.challenger, settings) if settings.challenger else None
        self.shadow = (ShadowRunner(self.requests_waiting)
                       if self.challenger is not None and settings.serve.shadow_share > 0 else None)
        self.capture = capture_writer(settings)
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self._pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="detops-decode")
        self._thread = threading.Thread(target=self._run, name="detops-inference", daemon=True)

    def start(self) -> None:
        for part in (self.champion, self.challenger, self.shadow, self.capture):
            if part is not None:
                part.start()
        self._thread.start()

    def close(self) -> None:
        """Stop taking batches (after those queued) and seal the open capture batch."""
        self.jobs.put(STOP)
        self._thread.join(timeout=self.settings.serve.timeout)
        for follower in (self.champion, self.challenger):
            if follower is not None:
                follower.stop(timeout=10.0)
        if self.capture is not None:
            self.capture.close()

    def requests_waiting(self) -> bool:
        return self.jobs.qsize() > 0

    async def submit(self, data: bytes, request_id: str) -> Outcome:
        """The answer to one image (the handler's only call into the engine)."""
        loop = asyncio.get_running_loop()
        job = Job(request_id, data, loop.create_future(), loop)
        metrics().in_flight.inc()
        try:
            self.jobs.put(job)
            assert job.future is not None
            return await job.future
        finally:
            metrics().in_flight.dec()

    # --- the inference thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        last = 1
        serve = self.settings.serve
        while True:
            batch = collect(self.jobs, serve.max_batch_size, serve.batch_timeout if last > 1 else 0.0)
            jobs = [job for job in batch if job is not STOP]
            last = len(jobs)
            try:
                self.answer(jobs)
            except Exception as exc:  # a bug must cost its batch, never the thread
                log.exception("a batch failed")
                for job in jobs:
                    job.outcome = job.outcome or error(500, f"internal error: {exc}", job.request_id)
            for job in jobs:
                if job.loop is not None and job.future is not None:
                    outcome = job.outcome or error(500, "internal error: no answer was made", job.request_id)
                    job.loop.call_soon_threadsafe(_resolve, job.future, outcome)
            if len(jobs) < len(batch):
                return

    def _decode_all(self, jobs: list[Job]) -> None:
        """Each job's pixels, or its own error (a truncated file fails its own request only)."""
        timeout, max_pixels = self.settings.serve.timeout, self.settings.serve.max_pixels

        def one(job: Job) -> None:
            if time.monotonic() - job.queued > timeout:
                job.outcome = error(504, f"the request waited more than {timeout:g} s (serve.timeout)",
                                    job.request_id)
                return
            try:
                job.image = decode(job.data, max_pixels)
            except Rejected as exc:
                job.outcome = error(exc.status, exc.detail, job.request_id)

        if len(jobs) > 1 and self.settings.threads > 1:
            list(self._pool.map(one, jobs))
        else:
            for job in jobs:
                one(job)

    def answer(self, jobs: list[Job]) -> None:
        """Set every job's outcome; each model runs once on the images it answers."""
        self._decode_all(jobs)
        champion = self.champion.current  # the batch keeps these two, whatever a swap does meanwhile
        challenger = self.challenger.current if self.challenger else None
        serve = self.settings.serve
        todo = [job for job in jobs if job.outcome is None]
        if champion is None:
            why = self.champion.error or "the model is still loading"
            for job in todo:
                job.outcome = error(503, f"no model is ready yet ({why}); retry, or watch GET /health", job.request_id)
            return
        routes = {id(job): assign(job.request_id, serve.canary_share, serve.shadow_share) for job in todo}
        canary = [job for job in todo if challenger is not None and routes[id(job)].canary]
        plain = [job for job in todo if not (challenger is not None and routes[id(job)].canary)]
        if todo:
            metrics().batch_size.observe(len(todo))
        if canary and challenger is not None:
            try:
                self._run_model(challenger, canary)
            except Exception:
                log.exception("the challenger failed on %d canary request(s); the champion answers them", len(canary))
                metrics().canary_fallbacks.inc(len(canary))
                plain += canary
        try:
            detections = self._run_model(champion, plain)
        except Exception as exc:
            log.exception("the champion failed on a batch of %d", len(plain))
            for job in plain:
                job.outcome = error(500, f"the model failed on this batch: {exc}", job.request_id)
            return
        for job, det in zip(plain, detections, strict=True):
            if self.shadow is not None and challenger is not None and routes[id(job)].shadow:
                self.shadow.offer(ShadowJob(job.image, det, champion, challenger))  # type: ignore[arg-type]
            if self.capture is not None and captured(job.request_id, serve.capture_share):
                self.capture.offer(Capture(job.data, job.outcome.body))  # type: ignore[union-attr]
            job.data, job.image = b"", None

    def _run_model(self, model: LoadedModel, jobs: list[Job]) -> list[Detections]:
        if not jobs:
            return []
        started = time.perf_counter()
        detections = model.predict([job.image for job in jobs])
        metrics().inference.labels(model.info.role).observe(time.perf_counter() - started)
        metrics().answers.labels(model.info.role, model.info.version).inc(len(jobs))
        for job, det in zip(jobs, detections, strict=True):
            job.outcome = answer(model, det, job.request_id)
        return detections


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():  # a client that went away cancelled it
        future.set_result(outcome)


def capture_writer(settings: ServeSettings) -> CaptureWriter | None:
    """The capture writer, when serve.capture_share is on."""
    serve, ws = settings.serve, settings.ws
    if serve.capture_share <= 0:
        return None
    return CaptureWriter(ws.resolve(ws.params.monitor.landing), ws.params.monitor.manifest, serve.capture_batch_size,
                         serve.capture_max_minutes, settings.score_threshold, queue_mb=serve.capture_queue_mb)


def answer(model: LoadedModel, det: Detections, request_id: str) -> Outcome:
    """Detections in the image's own pixels, COCO boxes, and the model that found them."""
    info = model.info
    ids, names = model.predictor.meta.class_ids, model.predictor.meta.class_names
    detections = []
    for box, score, label in zip(det.boxes, det.scores, det.labels, strict=True):
        x0, y0, x1, y1 = (float(v) for v in box)
        detections.append({"category_id": int(ids[int(label)]), "class_name": names[int(label)],
                           "score": round(float(score), 5),
                           "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]})
    body = {"detections": detections, "model": info.answer(), "request_id": request_id}
    headers = {"X-Model-Version": info.version, **({"X-Model-Alias": info.alias} if info.alias else {})}
    return Outcome(200, body, headers)


def error(status: int, detail: str, request_id: str) -> Outcome:
    return Outcome(status, {"detail": detail, "request_id": request_id})
