"""Prometheus metrics of the server process, in one registry of their own (`/metrics` renders it).

One process serves, so the metrics are plain in-process values: no multiprocess directory, no files.
"""

from __future__ import annotations

import functools

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
AGREEMENT_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ServeMetrics:
    """The server's metric objects, in one registry of their own. Capture's counters are its only record (tests
    read them too); `detops_serve_in_flight` is what the HorizontalPodAutoscaler scales on."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("detops_serve_requests", "HTTP requests, by route and status code.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("detops_serve_request_seconds", "Seconds from a request's arrival to its response.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("detops_serve_in_flight", "Predict requests not answered yet (the HPA's metric).",
                               registry=r)
        self.batch_size = Histogram("detops_serve_batch_size", "Requests per inference call.", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference = Histogram("detops_serve_inference_seconds", "Seconds per inference call, decode excluded.",
                                   ["role"], buckets=LATENCY_BUCKETS, registry=r)
        self.answers = Counter("detops_serve_answers", "Images answered, by model role and version.",
                               ["role", "version"], registry=r)
        self.loaded = Gauge("detops_serve_model_loaded", "1 for the version served in a role, 0 once replaced.",
                            ["role", "name", "version", "alias", "variant"], registry=r)
        self.load_failures = Counter("detops_serve_model_load_failures", "Versions that failed to download, load or "
                                     "warm up (the served one stayed).", ["role", "version", "stage"], registry=r)
        self.swaps = Counter("detops_serve_model_swaps", "Hot swaps to a new version.", ["role"], registry=r)
        self.follow_failures = Counter("detops_serve_follow_failures", "Polls of a followed model that failed.",
                                       ["role"], registry=r)
        self.canary_fallbacks = Counter("detops_serve_canary_fallbacks", "Canary requests the champion answered "
                                        "because the challenger failed.", registry=r)
        self.shadows = Counter("detops_serve_shadow_requests", "Shadow requests: run, skipped (requests waiting) or "
                               "failed.", ["outcome"], registry=r)
        self.agreement = Histogram("detops_serve_shadow_agreement", "F1 of champion and challenger boxes (IoU 0.5, "
                                   "same class name).", buckets=AGREEMENT_BUCKETS, registry=r)
        self.shadow_seconds = Histogram("detops_serve_shadow_seconds", "Seconds per shadow batch.",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.captures = Counter("detops_serve_capture_images", "Images offered to capture: saved, dropped (queue "
                                "full), unwritable, stopped (after close) or failed.", ["outcome"], registry=r)
        self.capture_batches = Counter("detops_serve_capture_batches", "Capture batches sealed (stale ones of "
                                       "stopped servers included).", registry=r)
        self.capture_failures = Counter("detops_serve_capture_failures", "Times capture paused on a write error.",
                                        ["error"], registry=r)
        self.capture_unwritable = Counter("detops_serve_capture_unwritable_seconds", "Seconds capture could not "
                                          "write.", registry=r)

@functools.cache
def metrics() -> ServeMetrics:
    """The metric objects (created once per process)."""
    return ServeMetrics()


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format: (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(metrics().registry), CONTENT_TYPE_LATEST
