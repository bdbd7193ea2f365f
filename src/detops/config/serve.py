from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class ServeParams(Section):
    """Model server (`detops serve`): the champion behind an HTTP API (one process: uvicorn, dynamic batching on an
    inference thread; scale with replicas), following its registry alias with zero-downtime hot swaps; optional
    canary and shadow traffic to the challenger.
    The API key is never a param: set DETOPS_SERVE_API_KEY. Detections keep predict.score_threshold."""

    model: str = Field("champion", min_length=1, description=(
        "What to serve: an alias of mlflow.registered_model (followed: a moved alias is hot-swapped in), "
        "models:/<name>@<alias> (followed), models:/<name>/<version> or a model file (fixed)."))
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = Field(
        "127.0.0.1", description="Interface to bind: loopback unless you mean it (0.0.0.0 or :: for a container).")
    port: int = Field(8000, ge=1024, le=65535, description="TCP port of the HTTP API.")
    threads: int = Field(0, ge=0, description="ONNX Runtime / OpenVINO threads; 0 = every usable core.")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description=(
        "auto: the version's deployable GPU variant where an NVIDIA GPU can run it, else its CPU variant."))
    max_batch_size: int = Field(8, ge=1, le=256, description="Most requests one inference call batches.")
    batch_timeout: float = Field(0.005, ge=0, le=1, description=(
        "Seconds the inference thread waits for each next request of a batch, only while the previous batch held "
        "more than one (under load: a burst forms one batch); light traffic never waits. 0 = take only what has "
        "already queued."))
    timeout: float = Field(30.0, gt=0, description="Seconds a request may wait in the queue before a 504.")
    poll_seconds: float = Field(10.0, ge=0, description=(
        "How often the server re-reads the aliases it follows; 0 = load once, never swap."))
    challenger: str = Field("challenger", min_length=1, max_length=200, pattern=r"^[\w\-]+$", description=(
        "Registry alias that canary and shadow traffic go to."))
    canary_share: float = Field(0.0, ge=0, le=1, description=(
        "Share of requests answered by the challenger, chosen by a hash of the request id (X-Request-Id)."))
    shadow_share: float = Field(0.0, ge=0, le=1, description=(
        "Share of champion-answered requests also run on the challenger after the response, when no request "
        "waits; their agreement goes to /metrics, never into a response."))
    max_body_mb: float = Field(16.0, gt=0, le=1024, description="Largest request body in MiB (413 above).")
    max_pixels: int = Field(40_000_000, ge=1, description=(
        "Largest image, width x height, read from its header before decoding (413 above: decompression bombs)."))
    capture_share: float = Field(0.0, ge=0, le=1, description=(
        "Share of served images saved with the champion's answers (predictions.jsonl) into a batch under "
        "monitor.landing (one open batch per server process), chosen by a hash of the request id, for the drift "
        "check and labelling; written off the request path: a write error pauses capture (retried with back-off, "
        "the gap counted in /metrics), never serving. 0 = off."))
    capture_batch_size: int = Field(200, ge=1, description=(
        "Images after which a capture batch is sealed (its manifest written, so `detops monitor` reads it); at "
        "least monitor.min_batch_size, or its check says insufficient data."))
    capture_max_minutes: float = Field(60.0, gt=0, description=(
        "Minutes after its first image at which a capture batch is sealed, full or not: quiet traffic still "
        "reaches the drift check. A batch left unsealed (its process killed) is sealed by any writer this long plus "
        "5 min after it opened."))
    capture_queue_mb: float = Field(64.0, gt=0, le=4096, description=(
        "MiB of captured images waiting for the writer (the bodies as sent); more are dropped and counted, never "
        "waited for. Keep it well below the pod's memory limit (deployments/k8s/deployment.yaml)."))
