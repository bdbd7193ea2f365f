"""What an inference worker does with a batch: decode each request on its own (one bad image fails only its own
request, with its own status), pick the model of each (champion, or the challenger for the canary share), run
each model once on its share of the batch, and answer; shadows are offered to the shadow runner, and the
captured share of the champion's answers (with the request's image) to the capture writer.

The worker also tells the API processes what it serves (`state`) whenever that changes.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
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
from detops.serving.state import SharedState


@dataclass
class Job:
    """One request: its image file's bytes (then its pixels), or why it is refused; and its route."""

    request_id: str
    data: bytes = b""
    image: np.ndarray | None = None
    rejected: Rejected | None = None
    canary: bool = False
    shadow: bool = False
    capture: bool = False  # keep the image's bytes: its answer goes to the capture writer


@dataclass
class Outcome:
    """One answer: status, json body and the headers naming the model that gave it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Worker:
    def __init__(self, settings: ServeSettings, worker: int) -> None:
        self.settings = settings
        self.worker = worker
        self.state = SharedState(settings.state_dir)
        self._publish_lock = threading.Lock()
        self.champion = Follower("champion", settings.champion, settings, worker, self.publish)
        self.challenger = (Follower("challenger", settings.challenger, settings, worker, self.publish)
                           if settings.challenger else None)
        self.shadow = (ShadowRunner(self.requests_waiting)
                       if self.challenger is not None and settings.serve.shadow_share > 0 else None)
        self.capture = capture_writer(settings)
        self._queue: Any = None
        self._pending_responses = 0
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.publish()
        self.champion.start()
        if self.challenger is not None:
            self.challenger.start()
        if self.shadow is not None:
            self.shadow.start()
        if self.capture is not None:
            self.capture.start()

    # --- what the API processes read -------------------------------------------------------------------
    def publish(self) -> None:
        champion, challenger = self.champion.current, self.challenger.current if self.challenger else None
        with self._publish_lock:
            self.state.publish(self.worker, {
                "worker": self.worker, "pid": os.getpid(), "updated": time.time(),
                "champion": champion.info.to_dict() if champion else None,
                "challenger": challenger.info.to_dict() if challenger else None,
                "error": self.champion.error,
                "challenger_error": self.challenger.error if self.challenger else None,
                "torch_imported": "torch" in sys.modules,
            })

    # --- LitServe hooks ----------------------------------------------------------------------------------
    def attach_queue(self, queue: Any) -> None:
        """LitServe's request queue of this worker: a shadow waits while it holds requests."""
        self._queue = queue

    def requests_waiting(self) -> bool:
        return self._queue is not None and self._queue.qsize() > 0

    def response_queued(self) -> None:
        """One response of the current batch is on its way; after the last one, the batch's shadows may run."""
        if self._pending_responses > 0:
            self._pending_responses -= 1
            if self._pending_responses == 0 and self.shadow is not None:
                self.shadow.release()

    # --- a request -------------------------------------------------------------------------------------
    def decode(self, payload: dict[str, Any]) -> Job:
        """The canonical request the API process made (`gate`): base64 image and request id. The pixels are
        decoded with the rest of the batch, in parallel (`answer`)."""
        job = Job(str(payload.get("request_id") or ""))
        try:
            job.data = base64.b64decode(str(payload["image"]))  # the gate made it: checked already
        except (KeyError, binascii.Error, ValueError):
            job.rejected = Rejected(400, "the request has no base64 image")
        route = assign(job.request_id, self.settings.serve.canary_share, self.settings.serve.shadow_share)
        job.canary, job.shadow = route.canary, route.shadow
        job.capture = self.capture is not None and captured(job.request_id, self.settings.serve.capture_share)
        return job

    def _decode_all(self, jobs: list[Job]) -> None:
        """Each job's pixels, or its rejection (a truncated file fails its own request only). Several images are
        decoded on the worker's threads: PIL and OpenCV release the GIL, and photos cost more to decode than the
        model costs to run."""
        todo = [job for job in jobs if job.rejected is None and job.image is None]

        def one(job: Job) -> None:
            try:
                job.image = decode(job.data, self.settings.serve.max_pixels)
            except Rejected as exc:
                job.rejected = exc
            if not job.capture or job.rejected is not None:
                job.data = b""

        if len(todo) > 1 and self.settings.threads > 1:
            list(self._decoder().map(one, todo))
        else:
            for job in todo:
                one(job)

    def _decoder(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.settings.threads, thread_name_prefix="detops-decode")
        return self._pool

    def answer(self, jobs: list[Job]) -> list[Outcome]:
        """Outcomes in the order of `jobs`; each model runs once on the images it answers."""
        self._decode_all(jobs)
        champion = self.champion.current  # the batch keeps these two, whatever a swap does meanwhile
        challenger = self.challenger.current if self.challenger else None
        outcomes: list[Outcome | None] = [None] * len(jobs)
        groups: dict[str, tuple[LoadedModel, list[int]]] = {}
        for index, job in enumerate(jobs):
            if job.rejected is not None:
                outcomes[index] = error(job.rejected.status, job.rejected.detail, job.request_id)
            elif champion is None:
                why = self.champion.error or "the model is still loading"
                outcomes[index] = error(503, f"no model is ready yet ({why}); retry, or watch GET /health",
                                        job.request_id)
            else:
                model = challenger if job.canary and challenger is not None else champion
                groups.setdefault(model.info.role, (model, []))[1].append(index)
        if groups:
            metrics().batch_size.observe(sum(len(indices) for _, indices in groups.values()))
        for role, (model, indices) in groups.items():
            started = time.perf_counter()
            detections = model.predict([jobs[i].image for i in indices])
            metrics().inference.labels(role).observe(time.perf_counter() - started)
            metrics().answers.labels(role, model.info.version).inc(len(indices))
            for i, det in zip(indices, detections, strict=True):
                outcomes[i] = answer(model, det, jobs[i].request_id)
                if jobs[i].shadow and role == "champion" and challenger is not None and self.shadow is not None:
                    self.shadow.offer(ShadowJob(jobs[i].image, det, challenger))  # type: ignore[arg-type]
                if jobs[i].capture and self.capture is not None:
                    if role == "champion":  # the champion's answers only: a canary's are the challenger's
                        self.capture.offer(Capture(jobs[i].data, outcomes[i].body))  # type: ignore[union-attr]
                    jobs[i].data = b""
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(jobs), "every job gets exactly one outcome"
        self._pending_responses = len(jobs)
        return done


def capture_writer(settings: ServeSettings) -> CaptureWriter | None:
    """The capture writer of this worker process, when serve.capture_share is on."""
    serve, ws = settings.serve, settings.ws
    if serve.capture_share <= 0:
        return None
    return CaptureWriter(ws.resolve(ws.params.monitor.landing), ws.params.monitor.manifest, serve.capture_batch_size,
                         serve.capture_max_minutes, settings.score_threshold)


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
