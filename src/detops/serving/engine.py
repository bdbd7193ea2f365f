"""The inference side of the server: the followed models, a request queue and an inference thread per model.

The HTTP handler parses a request (`gate`), then `submit`s the image's bytes: a `Job` goes on the queue of the model
that answers it (the challenger for the canary share, by a hash of the request id, else the champion) and the
handler awaits an asyncio future. Each model's thread blocks on its queue while idle (never polls), takes what
queued meanwhile, and, only when the previous batch held more than one request (requests then arrive faster than
one inference), waits up to `serve.batch_timeout` for each next one: light traffic meets no added latency, a burst
forms a full batch. A batch is decoded (in parallel: PIL and OpenCV release the GIL), run once and answered through
`call_soon_threadsafe`. ONNX Runtime and OpenVINO release the GIL while they run, so HTTP parsing and the other
model's thread go on meanwhile. A canary batch the challenger cannot answer goes to the champion's queue. Shadows
(champion-answered images also run on the challenger, to measure agreement) queue behind the challenger's requests
and are skipped whenever a champion request waits.
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
from detops.monitoring.landing import landing_location
from detops.serving.agreement import agreement
from detops.serving.capture import Capture, CaptureWriter, captured
from detops.serving.follow import Follower
from detops.serving.images import Rejected, decode
from detops.serving.loaded import LoadedModel
from detops.serving.metrics import metrics
from detops.serving.routing import assign
from detops.serving.settings import ServeSettings

log = logging.getLogger("detops.serve")
STOP = None  # put on a queue: its inference thread ends
MAX_SHADOW_BYTES = 64 * 2**20  # decoded images of the shadows waiting for an idle moment; more are skipped


@dataclass(frozen=True)
class Outcome:
    """One answer: status, json body and the headers naming the model that gave it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    """One request on its way: the image file's bytes (then its pixels) and where its answer goes; or a shadow
    (`shadow`: the champion and what it answered), which nobody awaits."""

    request_id: str
    data: bytes
    future: asyncio.Future[Outcome] | None = None
    queued: float = field(default_factory=time.monotonic)
    image: np.ndarray | None = None
    outcome: Outcome | None = None
    shadow: tuple[LoadedModel, Detections] | None = None


def collect(jobs: queue.Queue[Job | None], max_batch: int, wait: float) -> list[Job | None]:
    """Block for the first job, take what queued meanwhile, and wait up to `wait` seconds for each next one (the
    caller passes 0 unless the previous batch held several): a burst of requests, such as the clients of the last
    batch sending again, forms one batch. STOP ends a batch and is returned in it."""
    batch: list[Job | None] = [jobs.get()]
    while batch[-1] is not STOP and len(batch) < max_batch:
        try:
            batch.append(jobs.get(timeout=wait) if wait > 0 else jobs.get_nowait())
        except queue.Empty:
            break
    return batch


class Engine:
    """The followers of the champion (and challenger), each with its queue and inference thread, and capture."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings, serve, ws = settings, settings.serve, settings.ws
        self.champion = Follower("champion", settings.champion, settings)
        self.challenger = Follower("challenger", settings.challenger, settings) if settings.challenger else None
        self.followers = [f for f in (self.champion, self.challenger) if f is not None]
        self.queues: dict[str, queue.Queue[Job | None]] = {f.role: queue.Queue() for f in self.followers}
        self.capture = CaptureWriter(
            landing_location(ws), ws.params.monitor.manifest, serve.capture_batch_size,
            serve.capture_max_minutes, settings.score_threshold, queue_mb=serve.capture_queue_mb,
        ) if serve.capture_share > 0 else None
        self._shadow_bytes = 0  # of the shadows queued
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="detops-decode")
        self._threads = [threading.Thread(target=self._run, args=(f,), name=f"detops-inference-{f.role}",
                                          daemon=True) for f in self.followers]

    def start(self) -> None:
        for part in (*self.followers, *self._threads, self.capture):
            if part is not None:
                part.start()

    def close(self) -> None:
        """Stop taking batches (after those queued) and seal the open capture batch."""
        for jobs in self.queues.values():
            jobs.put(STOP)
        for thread in self._threads:
            thread.join(timeout=self.settings.serve.timeout)
        for follower in self.followers:
            follower.stop(timeout=10.0)
        if self.capture is not None:
            self.capture.close()

    async def submit(self, data: bytes, request_id: str) -> Outcome:
        """The answer to one image (the handler's only call into the engine)."""
        job = Job(request_id, data, asyncio.get_running_loop().create_future())
        canary = assign(request_id, self.settings.serve.canary_share, 0.0).canary
        metrics().in_flight.inc()
        try:
            self.queues["challenger" if canary and self.challenger and self.challenger.current else "champion"].put(job)
            return await job.future  # type: ignore[misc]
        finally:
            metrics().in_flight.dec()

    def _run(self, follower: Follower) -> None:
        jobs_queue, serve, last = self.queues[follower.role], self.settings.serve, 1
        while True:
            batch = collect(jobs_queue, serve.max_batch_size, serve.batch_timeout if last > 1 else 0.0)
            jobs = [job for job in batch if job is not STOP]
            last = len(jobs)
            try:
                jobs = self.answer(follower, jobs)
            except Exception as exc:  # a bug must cost its batch, never the thread
                log.exception("a batch failed")
                for job in jobs:
                    job.outcome = job.outcome or error(500, f"internal error: {exc}", job.request_id)
            for job in jobs:
                if job.future is not None:
                    outcome = job.outcome or error(500, "internal error: no answer was made", job.request_id)
                    job.future.get_loop().call_soon_threadsafe(_resolve, job.future, outcome)
            if batch[-1] is STOP:
                return

    def _decode(self, job: Job) -> None:
        """The job's pixels, or its own error (a truncated file fails its own request only)."""
        if job.image is not None or job.outcome is not None:
            return
        if time.monotonic() - job.queued > self.settings.serve.timeout:
            job.outcome = error(504, f"the request waited more than {self.settings.serve.timeout:g} s "
                                     "(serve.timeout)", job.request_id)
            return
        try:
            job.image = decode(job.data)
        except Rejected as exc:
            job.outcome = error(exc.status, exc.detail, job.request_id)

    def answer(self, follower: Follower, jobs: list[Job]) -> list[Job]:
        """Run `follower`'s model once on the requests among `jobs`, then its shadows; returns the requests
        answered here (a canary batch the challenger cannot answer is handed to the champion's queue instead)."""
        shadows = [job for job in jobs if job.shadow is not None]
        jobs = [job for job in jobs if job.shadow is None]
        if len(jobs) > 1:
            list(self._pool.map(self._decode, jobs))
        elif jobs:  # one image: decoded here, no hand-off to the pool
            self._decode(jobs[0])
        model, todo = follower.current, [job for job in jobs if job.outcome is None]  # kept, whatever a swap does
        if model is None and follower is self.champion:
            for job in todo:
                job.outcome = error(503, f"no model is ready yet ({follower.error or 'the model is still loading'}); "
                                         "retry, or watch GET /health", job.request_id)
            todo = []
        try:
            detections = self._run_model(model, todo)
        except Exception as exc:
            log.exception("the %s failed on a batch of %d", follower.role, len(todo))
            if follower is self.champion:
                for job in todo:
                    job.outcome = error(500, f"the model failed on this batch: {exc}", job.request_id)
                return jobs
            metrics().canary_fallbacks.inc(len(todo))  # the champion answers them
            for job in todo:
                self.queues["champion"].put(job)
            self._run_shadows(None, shadows)
            return [job for job in jobs if job.outcome is not None]
        if follower is self.challenger:
            self._run_shadows(model, shadows)
            return jobs
        serve = self.settings.serve
        for job, det in zip(todo, detections, strict=True):
            if self.challenger is not None and assign(job.request_id, serve.canary_share, serve.shadow_share).shadow:
                self.offer_shadow(Job(job.request_id, b"", image=job.image, shadow=(model, det)))  # type: ignore[arg-type]
            if self.capture is not None and captured(job.request_id, serve.capture_share):
                self.capture.offer(Capture(job.data, job.outcome.body))  # type: ignore[union-attr]
            job.data, job.image = b"", None
        return jobs

    def _run_model(self, model: LoadedModel | None, jobs: list[Job]) -> list[Detections]:
        if not jobs:
            return []
        if model is None:
            raise RuntimeError("no challenger is loaded")
        started = time.perf_counter()
        detections = model.predict([job.image for job in jobs])
        metrics().batch_size.observe(len(jobs))
        metrics().inference.labels(model.info.role).observe(time.perf_counter() - started)
        metrics().answers.labels(model.info.role, model.info.version).inc(len(jobs))
        for job, det in zip(jobs, detections, strict=True):
            job.outcome = answer(model, det, job.request_id)
        return detections

    def offer_shadow(self, job: Job) -> None:
        """Queue a shadow behind the challenger's requests, unless the shadows waiting hold too many pixels."""
        size = job.image.nbytes if job.image is not None else 0
        with self._lock:
            if self._shadow_bytes + size > MAX_SHADOW_BYTES:
                metrics().shadows.labels("skipped").inc()
                return
            self._shadow_bytes += size
        self.queues["challenger"].put(job)

    def _run_shadows(self, challenger: LoadedModel | None, shadows: list[Job]) -> None:
        """Agreement of the challenger with what the champion answered; skipped while a champion request waits."""
        with self._lock:
            self._shadow_bytes -= sum(job.image.nbytes for job in shadows if job.image is not None)
        if not shadows:
            return
        if challenger is None or self.queues["champion"].qsize() > 0:
            metrics().shadows.labels("skipped").inc(len(shadows))
            return
        try:
            started = time.perf_counter()
            answers = challenger.predict([job.image for job in shadows])
            metrics().shadow_seconds.observe(time.perf_counter() - started)
            for job, det in zip(shadows, answers, strict=True):
                champion, said = job.shadow  # type: ignore[misc]
                names = (champion.predictor.meta.class_names, challenger.predictor.meta.class_names)
                metrics().agreement.observe(agreement(said, det, names=names))
            metrics().shadows.labels("run").inc(len(shadows))
        except Exception:  # a shadow's failure is the challenger's problem, never a request's
            log.exception("shadow requests on the challenger failed")
            metrics().shadows.labels("failed").inc(len(shadows))


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():  # a client that went away cancelled it
        future.set_result(outcome)


def answer(model: LoadedModel, det: Detections, request_id: str) -> Outcome:
    """Detections in the image's own pixels, COCO boxes, and the model that found them."""
    info, names = model.info, dict(model.info.classes)
    detections = [{"category_id": r["category_id"], "class_name": names[r["category_id"]], "score": r["score"],
                   "bbox": r["bbox"]} for r in model.predictor.to_coco(det, 0)]
    headers = {"X-Model-Version": info.version, **({"X-Model-Alias": info.alias} if info.alias else {})}
    return Outcome(200, {"detections": detections, "model": info.answer(), "request_id": request_id}, headers)


def error(status: int, detail: str, request_id: str) -> Outcome:
    return Outcome(status, {"detail": detail, "request_id": request_id})
