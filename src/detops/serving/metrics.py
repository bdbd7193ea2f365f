"""Prometheus metrics shared by every process of one server (multiprocess mode).

The API processes count requests; the inference workers, which hold the models, count batches, loads, swaps,
answers and shadows. Each process writes its own memory-mapped files into one directory (PROMETHEUS_MULTIPROC_DIR,
a fresh one per server run) and `/metrics` merges them. The directory must be named before prometheus_client
creates a value: `use_directory` sets it and re-reads the value class, so an earlier import does no harm.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
AGREEMENT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def use_directory(path: Path) -> None:
    """Make this process (and the processes it starts) write metrics into `path`."""
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


@dataclass(frozen=True)
class ServeMetrics:
    requests: Any  # Counter: route, status
    latency: Any  # Histogram: route
    batch_size: Any  # Histogram
    inference: Any  # Histogram: seconds per batch, per model role
    answers: Any  # Counter: role, version
    loaded: Any  # Gauge: role, name, version, alias, variant, worker (1 = serving, 0 = replaced)
    load_failures: Any  # Counter: role, version, stage
    swaps: Any  # Counter: role
    shadows: Any  # Counter: outcome (run, skipped)
    agreement: Any  # Histogram
    shadow_seconds: Any  # Histogram
    captures: Any  # Counter: outcome (saved, dropped, stopped, failed)
    capture_batches: Any  # Counter
    capture_failures: Any  # Counter: error (ENOSPC, EACCES, ...)


@functools.cache
def metrics() -> ServeMetrics:
    """This process's metric objects (created once, after `use_directory`)."""
    from prometheus_client import Counter, Gauge, Histogram

    if MULTIPROC_ENV not in os.environ:
        raise RuntimeError(f"{MULTIPROC_ENV} is not set: call detops.serving.metrics.use_directory first")
    return ServeMetrics(
        requests=Counter("detops_serve_requests", "HTTP requests answered, by route and status code.",
                         ["route", "status"]),
        latency=Histogram("detops_serve_request_seconds", "Seconds from a request's arrival to its response.",
                          ["route"], buckets=LATENCY_BUCKETS),
        batch_size=Histogram("detops_serve_batch_size", "Requests per inference call (dynamic batching).",
                             buckets=BATCH_BUCKETS),
        inference=Histogram("detops_serve_inference_seconds", "Seconds per inference call, decode excluded.",
                            ["role"], buckets=LATENCY_BUCKETS),
        answers=Counter("detops_serve_answers", "Images answered, by the model role and version that answered.",
                        ["role", "version"]),
        loaded=Gauge("detops_serve_model_loaded", "1 for the version a worker serves in a role, 0 once replaced.",
                     ["role", "name", "version", "alias", "variant", "worker"], multiprocess_mode="livemax"),
        load_failures=Counter("detops_serve_model_load_failures", "Versions that failed to download, load or warm "
                              "up; the served version stayed.", ["role", "version", "stage"]),
        swaps=Counter("detops_serve_model_swaps", "Hot swaps to a new version, per worker and role.", ["role"]),
        shadows=Counter("detops_serve_shadow_requests", "Shadow requests run on the challenger, or skipped because "
                        "requests were waiting.", ["outcome"]),
        agreement=Histogram("detops_serve_shadow_agreement", "F1 of champion and challenger boxes matched at IoU "
                            "0.5 on shadowed requests.", buckets=AGREEMENT_BUCKETS),
        shadow_seconds=Histogram("detops_serve_shadow_seconds", "Seconds the challenger spent on a shadow request.",
                                 buckets=LATENCY_BUCKETS),
        captures=Counter("detops_serve_capture_images", "Served images offered to capture: saved, dropped (the "
                         "writer's queue was full), stopped (capture had stopped) or failed.", ["outcome"]),
        capture_batches=Counter("detops_serve_capture_batches", "Capture batches sealed (the manifest written)."),
        capture_failures=Counter("detops_serve_capture_failures", "Write errors that stopped capture in a worker "
                                 "(serving went on), by errno name.", ["error"]),
    )


def render() -> tuple[bytes, str]:
    """Every process's metrics merged, in Prometheus' text format: (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])
    return generate_latest(registry), CONTENT_TYPE_LATEST
