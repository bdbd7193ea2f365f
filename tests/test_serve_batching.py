"""The load-adaptive batch collector (`detops.serving.loop`): no wait under light traffic, full batches under load.

It runs in-process on a real `queue.Queue` with LitServe's own request tuples; the transport only records what the
loop sends (the START messages LitServe's workers send for each request they take).
"""

from __future__ import annotations

import threading
import time
from queue import Queue
from types import SimpleNamespace
from typing import Any

import pytest
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError

from detops.serving.loop import ServeBatchedLoop


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, item: Any, consumer_id: int) -> None:
        self.sent.append((consumer_id, item))


def _api(max_batch_size: int = 8, batch_timeout: float = 0.5, request_timeout: float = 30.0) -> Any:
    return SimpleNamespace(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                           request_timeout=request_timeout, stream=False)


def _request(uid: str, queued_at: float | None = None) -> tuple[int, str, float, bytes]:
    return 0, uid, time.monotonic() if queued_at is None else queued_at, b"x"


def _loop(last_batch: int) -> ServeBatchedLoop:
    loop = ServeBatchedLoop()
    loop._restart_workers = True  # START messages are sent, so the test sees which requests were taken
    loop._last_batch = last_batch
    return loop


def _put_later(queue: Queue, uid: str, delay: float) -> threading.Thread:
    def put() -> None:
        time.sleep(delay)
        queue.put(_request(uid))

    thread = threading.Thread(target=put)
    thread.start()
    return thread


def test_light_traffic_takes_what_queued_and_never_waits() -> None:
    queue: Queue = Queue()
    for uid in ("a", "b", "c"):
        queue.put(_request(uid))
    loop, transport = _loop(last_batch=1), _Recorder()
    payloads, timed_out = loop.get_batch_requests(_api(), queue, transport)
    assert [uid for _, uid, _ in payloads] == ["a", "b", "c"] and not timed_out
    assert [item[0] for _, item in transport.sent] == ["a", "b", "c"]  # each taken request was marked started

    late = _put_later(queue, "late", 0.2)  # light traffic: the collector does not wait for it
    loop._last_batch = 1
    queue.put(_request("d"))
    payloads, _ = loop.get_batch_requests(_api(batch_timeout=1.0), queue, transport)
    late.join()
    assert [uid for _, uid, _ in payloads] == ["d"]


def test_under_load_waits_for_the_batch_to_fill() -> None:
    queue: Queue = Queue()
    queue.put(_request("a"))
    late = _put_later(queue, "b", 0.05)
    loop = _loop(last_batch=4)  # the previous batch held several requests: traffic is heavy
    payloads, _ = loop.get_batch_requests(_api(batch_timeout=0.5), queue, _Recorder())
    late.join()
    assert [uid for _, uid, _ in payloads] == ["a", "b"]  # it waited for b, then until the deadline
    assert loop._last_batch == 2


def test_full_batch_stops_collecting() -> None:
    queue: Queue = Queue()
    for uid in "abcde":
        queue.put(_request(uid))
    loop = _loop(last_batch=8)
    payloads, _ = loop.get_batch_requests(_api(max_batch_size=3, batch_timeout=5.0), queue, _Recorder())
    assert [uid for _, uid, _ in payloads] == ["a", "b", "c"] and queue.qsize() == 2


def test_stale_requests_time_out_and_the_sentinel_stops_the_loop() -> None:
    queue: Queue = Queue()
    queue.put(_request("old", queued_at=time.monotonic() - 60))
    queue.put(_request("new"))
    payloads, timed_out = _loop(last_batch=1).get_batch_requests(_api(request_timeout=30.0), queue, _Recorder())
    assert [uid for _, uid, _ in payloads] == ["new"] and timed_out == [(0, "old")]

    queue.put(_SENTINEL_VALUE)
    with pytest.raises(_StopLoopError):
        _loop(last_batch=1).get_batch_requests(_api(), queue, _Recorder())


def test_an_idle_worker_blocks_instead_of_polling() -> None:
    """With nothing queued the collector returns empty after LitServe's own 1 s idle wait, without spinning."""
    queue: Queue = Queue()
    started = time.process_time()
    payloads, timed_out = _loop(last_batch=1).get_batch_requests(_api(), queue, _Recorder())
    assert payloads == [] and timed_out == []
    assert time.process_time() - started < 0.2  # CPU seconds used by this process while it waited about 1 s
