"""The load driver of benchmarks/serve_load.py counts what it sees: against real servers on 127.0.0.1 (a tiny
Starlette app under uvicorn whose answers are known, and the benchmark's own no-op LitServe endpoint in its own
processes), every request sent is counted once as ok or failed, concurrency is bounded, the run stops at its
request count or its deadline, and the percentiles are numpy's."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import serve_load  # noqa: E402

DELAY_S = 0.02


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = 0
        self.in_flight = 0
        self.max_in_flight = 0


@pytest.fixture
def app_url() -> Iterator[tuple[str, _Stats]]:
    """A real HTTP server on loopback: every /predict takes DELAY_S; a body containing `fail` gets a 500."""
    import asyncio

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    stats = _Stats()

    async def predict(request: Request) -> JSONResponse:
        body = await request.body()
        with stats.lock:
            stats.received += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        await asyncio.sleep(DELAY_S)
        with stats.lock:
            stats.in_flight -= 1
        if b"fail" in body:
            return JSONResponse({"detail": "no"}, status_code=500)
        return JSONResponse({"detections": [], "model": {"version": "7"}}, headers={"X-Model-Version": "7"})

    port = serve_load.free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/predict", predict, methods=["POST"])]),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/predict", stats
    server.should_exit = True
    thread.join(timeout=30)


def test_percentile_is_numpys_linear_interpolation() -> None:
    import numpy as np

    values = [12.0, 3.0, 7.5, 100.0, 1.0, 55.0, 9.0]
    for q in (0, 10, 50, 95, 99, 100):
        assert serve_load.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert serve_load.percentile([4.0], 99) == 4.0
    assert serve_load.percentile([], 50) != serve_load.percentile([], 50)  # nan


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_driver_counts_ok_failed_versions_and_bounds_concurrency(app_url: tuple[str, _Stats], client: str) -> None:
    url, stats = app_url
    good, bad = serve_load.json_payload(b"an image"), serve_load.Payload(b"fail", "text/plain")
    answers: list[tuple[int, str | None]] = []
    result = serve_load.run_load(url, [good, good, good, bad], concurrency=4, requests=40, client=client,
                                 on_answer=lambda t0, t1, status, version: answers.append((status, version)))
    assert (result.sent, result.ok, result.failed, result.images) == (40, 30, 10, 30)
    assert stats.received == 40  # it stopped at its count: nothing sent after
    assert dict(result.statuses) == {"200": 30, "500": 10}
    assert dict(result.versions) == {"7": 30}
    assert sorted(answers) == sorted([(200, "7")] * 30 + [(500, None)] * 10)
    assert result.max_in_flight == 4 and stats.max_in_flight == 4
    # the server's loop (uvloop, libuv) times its sleep from the time it cached at the start of its iteration, so
    # an answer can come up to its 1 ms timer granularity before DELAY_S has passed on the client's clock
    assert len(result.latencies_ms) == 30 and min(result.latencies_ms) >= DELAY_S * 1000 - 1
    assert DELAY_S * 1000 - 1 <= result.p(50) <= result.p(95) <= result.p(99) <= max(result.latencies_ms)
    # 40 requests of >= 20 ms, 4 at a time: at least 10 rounds; the throughput is what was answered per second
    assert result.seconds >= 10 * (DELAY_S - 0.001)
    assert result.throughput == pytest.approx(30 / result.seconds)


def test_warmup_is_not_counted_and_concurrency_one_is_serial(app_url: tuple[str, _Stats]) -> None:
    url, stats = app_url
    result = serve_load.run_load(url, [serve_load.json_payload(b"x")], concurrency=1, requests=5, warmup=3)
    assert (result.sent, result.ok, result.failed) == (5, 5, 0)
    assert stats.received == 8 and stats.max_in_flight == 1


def test_deadline_and_stop_end_an_unbounded_run(app_url: tuple[str, _Stats]) -> None:
    url, _ = app_url
    started = time.perf_counter()
    result = serve_load.run_load(url, [serve_load.json_payload(b"x")], concurrency=2, requests=10**9,
                                 deadline_s=0.5)
    assert 0 < result.sent < 10**9 and result.failed == 0
    assert time.perf_counter() - started < 5
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.perf_counter()
    result = serve_load.run_load(url, [serve_load.json_payload(b"x")], concurrency=2, requests=10**9, stop=stop,
                                 deadline_s=60)  # the deadline only bounds the test: `stop` must end it first
    assert 0 < result.sent < 10**9 and result.ok == result.sent
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(("client", "error"), [("aiohttp", "ClientConnectorError"), ("httpx", "ConnectError")])
def test_no_server_is_every_request_failed_not_a_crash(client: str, error: str) -> None:
    url = f"http://127.0.0.1:{serve_load.free_port()}/predict"  # nothing listens there
    result = serve_load.run_load(url, [serve_load.json_payload(b"x")], concurrency=3, requests=7, timeout=5,
                                 client=client)
    assert (result.sent, result.ok, result.failed) == (7, 0, 7)
    assert dict(result.statuses) == {error: 7}
    assert result.latencies_ms == [] and result.throughput == 0.0


def test_rounds_interleave_targets_and_merge_into_one_cell() -> None:
    calls: list[tuple[str, str, str, int]] = []

    def fake(name: str, ms: float) -> serve_load.Target:
        def run(images: str, setting: str, requests: int) -> serve_load.LoadResult:
            calls.append((name, images, setting, requests))
            return serve_load.LoadResult(concurrency=1, sent=requests, ok=requests, images=requests, seconds=1.0,
                                         latencies_ms=[ms] * requests)

        return serve_load.Target(name, {"demo": [], "photos": []}, ["c=1", "c=8"], run)

    rows = serve_load.measure([fake("a", 1.0), fake("b", 2.0)], ["demo", "photos"], requests=10, rounds=2)
    assert [c[:2] for c in calls[:8]] == [("a", "demo")] * 2 + [("b", "demo")] * 2 + [("a", "photos")] * 2 + [
        ("b", "photos")] * 2  # round 1 visits every target before round 2 starts
    assert len(calls) == 16 and {c[3] for c in calls} == {5}
    assert len(rows) == 8
    row = next(r for r in rows if (r.server, r.images, r.setting) == ("b", "photos", "c=8"))
    assert (row.result.sent, row.result.images, row.result.seconds) == (10, 10, 2.0)
    assert row.result.throughput == 5.0 and row.result.p(99) == 2.0


def test_settled_at_needs_a_run_of_answers_by_the_new_version() -> None:
    answers = [(1.0, "1"), (2.0, "2"), (3.0, "1"), (4.0, "2"), (5.0, "2"), (6.0, None), (7.0, "2"), (8.0, "2"),
               (9.0, "2")]
    assert serve_load.settled_at(answers, "2", 2) == 4.0
    assert serve_load.settled_at(answers, "2", 3) == 7.0  # a failed answer breaks a run
    assert serve_load.settled_at(answers, "2", 4) is None


def test_driver_against_the_noop_litserve_endpoint(tmp_path: Path) -> None:
    """The benchmark's framework-ceiling server, in its own processes (API server, spawned inference worker)."""
    port = serve_load.free_port()
    with serve_load.Server("no-op LitServe", serve_load.noop_command(port), f"http://127.0.0.1:{port}/health",
                           log=tmp_path / "noop.log", timeout=120) as server:
        payloads = [serve_load.json_payload(b"image %d" % i) for i in range(3)]
        result = serve_load.run_load(f"http://127.0.0.1:{port}/predict", payloads, concurrency=4, requests=24,
                                     warmup=4)
        assert (result.sent, result.ok, result.failed) == (24, 24, 0), server.log_tail()
        assert dict(result.versions) == {} and result.p(99) > 0
        server.pause()  # stopped: the request times out, counted as failed
        paused = serve_load.run_load(f"http://127.0.0.1:{port}/predict", payloads, concurrency=1, requests=1,
                                     timeout=1.0)
        timed_out = {"TimeoutError", "ReadTimeout", "ConnectTimeout"}  # aiohttp's, httpx's
        assert (paused.sent, paused.failed) == (1, 1) and set(paused.statuses) <= timed_out
        server.resume()
        resumed = serve_load.run_load(f"http://127.0.0.1:{port}/predict", payloads, concurrency=2, requests=4)
        assert (resumed.ok, resumed.failed) == (4, 0)
        processes = server.rss()
        assert len(processes) >= 2 and all(mib > 0 for _, _, mib in processes)
        pid = server.process.pid if server.process else 0
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
