"""The LitAPI of `detops serve`. LitServe builds its `/predict` route from this class in the API process and
runs `setup`, `decode_request`, `predict` and `encode_response` in each spawned inference worker.

No `from __future__ import annotations` here: LitServe reads the annotation of `decode_request` to type its route,
and a string would not do. `decode_request` receives the JSON object that `gate` made of the request (LitServe
parses it in the API process and ships it to the worker).
"""

import logging
import os
from typing import Any

import litserve as ls
from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from detops.serving.keys import key_problem
from detops.serving.loop import serve_loop
from detops.serving.settings import ServeSettings
from detops.serving.worker import Job, Outcome, Worker


class DetectorAPI(ls.LitAPI):
    """Detections for one image per request, requests batched dynamically across clients."""

    def __init__(self, settings: ServeSettings) -> None:
        serve = settings.serve
        super().__init__(max_batch_size=serve.max_batch_size, batch_timeout=serve.batch_timeout,
                         loop=serve_loop(serve.max_batch_size))
        self.settings = settings
        self._worker: Worker | None = None

    @property
    def worker(self) -> Worker:
        if self._worker is None:
            raise RuntimeError("the worker is not set up (LitServe calls setup() first)")
        return self._worker

    def setup(self, device: str) -> None:
        """Start following the model in the background and return at once: until a version is loaded and warmed,
        /health says 503 and requests get a 503 that says why."""
        from detops.serving.logs import configure_logging
        from detops.serving.metrics import use_directory

        configure_logging()
        use_directory(self.settings.metrics_dir)  # inherited through the environment; made explicit here
        worker = int(os.environ.get("LITSERVE_WORKER_ID", "0"))
        logging.getLogger("detops.serve").info("worker %d: starting on %s (%d ONNX Runtime threads)", worker,
                                               device, self.settings.threads)
        self._worker = Worker(self.settings, worker)
        self._worker.start()

    def authorize(self, request: Request) -> None:
        """LitServe's guard of its routes (and of ours): DETOPS_SERVE_API_KEY, when set, in X-API-Key or
        `Authorization: Bearer`. /health is ours and has no guard: probes need no key."""
        problem = key_problem(request.headers)
        if problem:
            raise HTTPException(status_code=401, detail=problem)

    def decode_request(self, request: Request) -> Job:
        payload: Any = request  # LitServe hands the parsed JSON object, not the Request
        return self.worker.decode(payload)

    def predict(self, x: Any) -> Any:
        """A list of jobs when batching (max_batch_size > 1), a single job otherwise, as LitServe calls it."""
        if isinstance(x, list):
            return self.worker.answer(x)
        return self.worker.answer([x])[0]

    def encode_response(self, output: Outcome) -> Response:
        """A ready response (status and model headers included): FastAPI sends a Response as it is."""
        return JSONResponse(output.body, status_code=output.status, headers=output.headers)

    # hooks called by detops.serving.loop
    def attach_queue(self, queue: Any) -> None:
        self.worker.attach_queue(queue)

    def response_queued(self) -> None:
        self.worker.response_queued()
