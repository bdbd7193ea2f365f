"""The main process of `detops serve`: settings, a fresh runtime folder (worker state, metrics, downloads),
LitServer with the gate and the routes, then LitServe's `run` until SIGINT or SIGTERM.

It imports no model runtime: LitServe forks the API processes from it, and a server serving an ONNX file must
not have torch in any process. What LitServe does by default and this module sets otherwise: the host (LitServe
binds 0.0.0.0; here `serve.host`, loopback by default), the client.py it writes into the working directory (not
written), the accelerator (`auto` imports torch where there is no nvidia-smi; here cpu or cuda, decided), its own
`/health` (moved to /litserve/health: ours says whether a model is loaded and warmed).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detops.serving.settings import ServeSettings, capture_line, settings_for
from detops.workspace import Workspace

log = logging.getLogger("detops.serve")


def serve(ws: Workspace) -> None:
    """Serve until interrupted. Errors a user can fix (a bad reference, bad params) raise before anything starts."""
    from detops.serving.logs import configure_logging
    from detops.serving.metrics import use_directory

    configure_logging()
    runtime = Path(tempfile.mkdtemp(prefix="detops-serve-"))
    try:
        settings = settings_for(ws, runtime)
        use_directory(settings.metrics_dir)  # before any metric exists, in this process and those it starts
        settings.state_dir.mkdir(parents=True)
        settings.models_dir.mkdir(parents=True)
        server = build_server(settings)
        serve_params = settings.serve
        log.info("serving %s on http://%s:%d (%d worker(s), batches of up to %d, %s)", settings.champion,
                 _display(serve_params.host), serve_params.port, serve_params.workers, serve_params.max_batch_size,
                 "GPU" if settings.gpu else f"CPU, {settings.threads} thread(s) per worker")
        log.info("%s", capture_line(ws))
        threading.Thread(target=_announce_ready, args=(settings,), name="detops-announce", daemon=True).start()
        with _sigterm_as_interrupt():
            server.run(host=serve_params.host, port=serve_params.port, num_api_servers=serve_params.api_servers,
                       generate_client_file=False, log_level="warning", api_server_worker_type="process")
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def build_server(settings: ServeSettings) -> Any:
    """LitServer around `DetectorAPI`, its app wrapped in the gate and given /health, /model and /metrics."""
    import litserve as ls

    from detops.serving.api import DetectorAPI
    from detops.serving.gate import Gate, GateLimits
    from detops.serving.routes import add_routes

    serve = settings.serve
    api = DetectorAPI(settings)
    server = ls.LitServer(
        api,
        accelerator="cuda" if settings.gpu else "cpu",
        devices=1,
        workers_per_device=serve.workers,
        timeout=serve.timeout,
        healthcheck_path="/litserve/health",
        info_path="/litserve/info",
        max_payload_size=canonical_limit(settings.max_body_bytes),
        model_metadata={"source": str(settings.champion)},
    )
    add_routes(server.app, settings, api.authorize)
    server.app.add_middleware(Gate, limits=GateLimits(settings.max_body_bytes, serve.max_pixels))  # outermost
    return server


def canonical_limit(max_body: int) -> int:
    """LitServe's own size check sees the gate's canonical body: the image in base64 (4/3) plus a little JSON.
    The client's body is held to `max_body` by the gate itself, before LitServe reads anything."""
    return 4 * math.ceil(max_body / 3) + 4096


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    """A process forked from the main one (LitServe's API servers, its manager) stops on SIGTERM as usual."""
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (Kubernetes, systemd, `kill`) shuts down like Ctrl+C: LitServe then stops its API processes and
    workers instead of leaving them orphaned."""
    os.register_at_fork(after_in_child=_default_sigterm_in_child)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _announce_ready(settings: ServeSettings, poll: float = 0.5) -> None:
    """Log once when every worker serves a warmed model (workers log their own errors)."""
    from detops.serving.state import SharedState, health

    state, serve = SharedState(settings.state_dir), settings.serve
    while True:
        ok, body = health(state.workers(), serve.workers)
        if ok:
            model = body["model"]
            log.info("ready: version %s of %s (alias %s) at http://%s:%d/predict; docs at /docs", model["version"],
                     model["name"], model["alias"], _display(serve.host), serve.port)
            return
        time.sleep(poll)


def _display(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host
