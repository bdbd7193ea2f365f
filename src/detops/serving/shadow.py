"""Shadow traffic: some champion-answered requests also run on the challenger, only to measure how much the two
agree. A shadow is offered after its request's answer is made, runs on a thread of its own, and is dropped
(counted as skipped) whenever a request is waiting, because on a small CPU a shadow always takes time from real
requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detops.inference.predictor import Detections
from detops.serving.agreement import agreement
from detops.serving.loaded import LoadedModel
from detops.serving.metrics import metrics

log = logging.getLogger("detops.serve")
MAX_PENDING_BYTES = 64 * 2**20  # decoded images of the shadows waiting for an idle moment; more are skipped


@dataclass(frozen=True)
class ShadowJob:
    image: np.ndarray
    answer: Detections  # what the champion answered
    champion: LoadedModel  # the champion that answered (its class names)
    challenger: LoadedModel  # the challenger as it was when the request was answered


class ShadowRunner:
    """Runs offered shadows on its thread when no request waits (`requests_waiting`)."""

    def __init__(self, requests_waiting: Callable[[], bool]) -> None:
        self.requests_waiting = requests_waiting
        self._ready: deque[ShadowJob] = deque()
        self._bytes = 0  # of the images in _ready
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="detops-shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, job: ShadowJob) -> None:
        with self._wake:
            if self._bytes + job.image.nbytes > MAX_PENDING_BYTES:
                metrics().shadows.labels("skipped").inc()
                return
            self._ready.append(job)
            self._bytes += job.image.nbytes
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._ready:
                    self._wake.wait()
                job = self._ready.popleft()
                self._bytes -= job.image.nbytes
            if self.requests_waiting():
                metrics().shadows.labels("skipped").inc()
                continue
            try:
                started = time.perf_counter()
                (answer,) = job.challenger.predict([job.image])
                metrics().shadow_seconds.observe(time.perf_counter() - started)
                names = (job.champion.predictor.meta.class_names, job.challenger.predictor.meta.class_names)
                metrics().agreement.observe(agreement(job.answer, answer, names=names))
                metrics().shadows.labels("run").inc()
            except Exception:  # a shadow's failure is the challenger's problem, never the caller's
                log.exception("shadow request on the challenger failed")
                metrics().shadows.labels("failed").inc()
