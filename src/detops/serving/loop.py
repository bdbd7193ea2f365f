"""LitServe's own loops (timeouts and error handling unchanged) with the hooks the server needs: the worker learns
its request queue (a shadow runs only while it is empty) and hears when each response has been queued (a batch's
shadows start after its responses, never before); and the batch collector waits only under load.

LitServe's collector waits `batch_timeout` for every batch to fill, polling the queue each millisecond: at
concurrency 1 each request pays the whole timeout, and an idle worker burns CPU. Ours blocks for the first request,
takes what queued meanwhile, and waits up to `batch_timeout` for more only when the previous batch held more than
one request (requests are arriving faster than one inference): light traffic meets no added latency, heavy traffic
still forms full batches.

Checked against LitServe 0.2.19 (`inference_worker` calls the loop with the request queue as fourth argument;
every response goes through `put_response`; `get_batch_requests` returns the payloads and the timed-out ids),
which pyproject pins.
"""

import time
from queue import Empty, Queue
from typing import Any

from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop, SingleLoop
from litserve.utils import LitAPIStatus, LoopResponseType

_IDLE_WAIT_S = 1.0  # how long a blocked get waits before the loop goes round (LitServe's single loop uses 1 s too)


class _Hooks:
    _api: Any = None

    def __call__(self, lit_api: Any, device: Any, worker_id: Any, request_queue: Any, *args: Any,
                 **kwargs: Any) -> Any:
        self._api = lit_api
        lit_api.attach_queue(request_queue)
        return super().__call__(lit_api, device, worker_id, request_queue, *args, **kwargs)  # type: ignore[misc]

    def put_response(self, transport: Any, response_queue_id: int, uid: str, response_data: Any, status: Any,
                     response_type: Any) -> None:
        super().put_response(transport, response_queue_id, uid, response_data, status,  # type: ignore[misc]
                             response_type)
        if status != LitAPIStatus.START and self._api is not None:
            self._api.response_queued()


class ServeBatchedLoop(_Hooks, BatchedLoop):
    """LitServe's dynamic batching loop (max_batch_size > 1) with the load-adaptive collector above."""

    _last_batch = 1

    def get_batch_requests(self, lit_api: Any, request_queue: Queue, transport: Any) -> tuple[list, list]:
        payloads: list = []
        timed_out: list = []
        try:
            self._take(request_queue.get(timeout=_IDLE_WAIT_S), lit_api, transport, payloads, timed_out)
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + (lit_api.batch_timeout if self._last_batch > 1 else 0.0)
        while len(payloads) + len(timed_out) < lit_api.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=remaining) if remaining > 0 else request_queue.get_nowait()
            except Empty:
                break
            self._take(item, lit_api, transport, payloads, timed_out)
        self._last_batch = len(payloads) + len(timed_out)
        return payloads, timed_out

    def _take(self, item: Any, lit_api: Any, transport: Any, payloads: list, timed_out: list) -> None:
        """What LitServe's collector does with each request: mark it started, or time it out if it waited too long."""
        if item == _SENTINEL_VALUE:
            raise _StopLoopError()
        response_queue_id, uid, timestamp, x_enc = item
        self.put_response(transport, response_queue_id, uid, (), LitAPIStatus.START,
                          LoopResponseType.STREAMING if lit_api.stream else LoopResponseType.REGULAR)
        if lit_api.request_timeout not in (-1, False) and time.monotonic() - timestamp > lit_api.request_timeout:
            timed_out.append((response_queue_id, uid))
        else:
            payloads.append((response_queue_id, uid, x_enc))


class ServeSingleLoop(_Hooks, SingleLoop):
    """LitServe's one-request loop (max_batch_size 1: `predict` gets a request, not a list)."""


def serve_loop(max_batch_size: int) -> Any:
    return ServeBatchedLoop() if max_batch_size > 1 else ServeSingleLoop()
