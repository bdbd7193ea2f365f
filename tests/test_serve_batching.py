"""The load-adaptive batch collector (`detops.serving.engine.collect`): no wait under light traffic, full batches
under load, a blocked (not polling) wait while idle, and the stop marker."""

from __future__ import annotations

import queue
import threading
import time

from detops.serving.engine import STOP, Job, collect


def _job(rid: str) -> Job:
    return Job(rid, b"x")


def _put_later(jobs: queue.Queue, rid: str | None, delay: float) -> threading.Thread:
    def put() -> None:
        time.sleep(delay)
        jobs.put(_job(rid) if rid is not None else STOP)

    thread = threading.Thread(target=put)
    thread.start()
    return thread


def _ids(batch: list[Job | None]) -> list[str | None]:
    return [job.request_id if job is not None else None for job in batch]


def test_light_traffic_takes_what_queued_and_never_waits() -> None:
    jobs: queue.Queue = queue.Queue()
    for rid in ("a", "b", "c"):
        jobs.put(_job(rid))
    assert _ids(collect(jobs, 8, 0.0)) == ["a", "b", "c"]
    late = _put_later(jobs, "late", 0.2)  # light traffic (wait 0): the collector does not wait for it
    jobs.put(_job("d"))
    assert _ids(collect(jobs, 8, 0.0)) == ["d"]
    late.join()


def test_under_load_waits_for_the_batch_to_fill() -> None:
    jobs: queue.Queue = queue.Queue()
    jobs.put(_job("a"))
    late = _put_later(jobs, "b", 0.05)
    started = time.monotonic()
    assert _ids(collect(jobs, 8, 0.5)) == ["a", "b"]  # it waited for b, then until the deadline
    assert time.monotonic() - started >= 0.45
    late.join()


def test_full_batch_stops_collecting() -> None:
    jobs: queue.Queue = queue.Queue()
    for rid in "abcde":
        jobs.put(_job(rid))
    started = time.monotonic()
    assert _ids(collect(jobs, 3, 5.0)) == ["a", "b", "c"] and jobs.qsize() == 2
    assert time.monotonic() - started < 1.0


def test_an_idle_collector_blocks_instead_of_polling_and_stop_ends_it() -> None:
    """Nothing queued for 1 s: the collector uses almost no CPU meanwhile, then returns the stop marker."""
    jobs: queue.Queue = queue.Queue()
    jobs.put(_job("a"))
    collect(jobs, 8, 0.0)
    stopper = _put_later(jobs, None, 1.0)
    started = time.process_time()
    assert _ids(collect(jobs, 8, 0.0)) == [None]
    assert time.process_time() - started < 0.2  # CPU seconds used while it waited about 1 s
    stopper.join()
    jobs.put(_job("x"))
    jobs.put(STOP)
    jobs.put(_job("after"))
    assert _ids(collect(jobs, 8, 0.0)) == ["x", None]  # the stop marker ends the batch
