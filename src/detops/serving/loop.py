"""LitServe's own loops (its batching, timeouts and error handling unchanged) with two hooks the server needs:
the worker learns its request queue (a shadow runs only while it is empty) and hears when each response has been
queued (a batch's shadows start after its responses, never before).

Checked against LitServe 0.2.19 (`inference_worker` calls the loop with the request queue as fourth argument;
every response goes through `put_response`), which pyproject pins.
"""

from typing import Any

from litserve.loops.simple_loops import BatchedLoop, SingleLoop
from litserve.utils import LitAPIStatus


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
    """LitServe's dynamic batching loop (max_batch_size > 1)."""


class ServeSingleLoop(_Hooks, SingleLoop):
    """LitServe's one-request loop (max_batch_size 1: `predict` gets a request, not a list)."""


def serve_loop(max_batch_size: int) -> Any:
    return ServeBatchedLoop() if max_batch_size > 1 else ServeSingleLoop()
