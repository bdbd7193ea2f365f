"""`detops serve`'s process: settings, the engine (models, queue, inference thread), the app, and uvicorn until
SIGINT or SIGTERM.

One process per replica: uvicorn's event loop parses requests while the inference thread runs the model (ONNX
Runtime and OpenVINO release the GIL). Replicas scale on Kubernetes (deployments/k8s), not inside a process.
On SIGINT or SIGTERM uvicorn stops accepting, finishes the requests in flight, then the app's shutdown closes the
engine (the open capture batch is sealed) and deletes this run's downloads. No model runtime is imported here: a
server of an ONNX or OpenVINO file never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from detops.serving.settings import ServeSettings, capture_line, settings_for
from detops.workspace import Workspace

log = logging.getLogger("detops.serve")
GRACE_SECONDS = 20  # in-flight requests finish within this after SIGTERM (below Kubernetes' 30 s default grace)


def serve(ws: Workspace) -> None:
    """Serve until interrupted. Errors a user can fix (a bad reference, bad params) raise before anything starts."""
    import uvicorn

    from detops.serving.logs import configure_logging

    configure_logging()
    runtime = Path(tempfile.mkdtemp(prefix="detops-serve-"))
    try:
        settings = settings_for(ws, runtime)
        settings.models_dir.mkdir(parents=True)
        serve_params = settings.serve
        log.info("serving %s on http://%s:%d (batches of up to %d, %s)", settings.champion, _display(serve_params.host),
                 serve_params.port, serve_params.max_batch_size,
                 "GPU" if settings.gpu else f"CPU, {settings.threads} thread(s)")
        log.info("%s", capture_line(ws))
        config = uvicorn.Config(build(settings), host=serve_params.host, port=serve_params.port, log_level="warning",
                                timeout_graceful_shutdown=GRACE_SECONDS)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled, after shutdown
            uvicorn.Server(config).run()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def build(settings: ServeSettings) -> Any:
    """The app whose startup starts the engine and whose shutdown closes it (tests run it in process too)."""
    from detops.serving.engine import Engine
    from detops.serving.routes import build_app

    engine = Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        engine.start()
        threading.Thread(target=_announce_ready, args=(engine, settings), name="detops-announce", daemon=True).start()
        yield
        log.info("stopping: sealing the open capture batch and deleting this run's downloads")
        engine.close()
        shutil.rmtree(settings.runtime, ignore_errors=True)

    return build_app(settings, engine, lifespan)


def _announce_ready(engine: Any, settings: ServeSettings) -> None:
    """Log once, when the champion first answers."""
    engine.champion.ready.wait()
    model, serve = engine.champion.current.info, settings.serve
    log.info("ready: version %s of %s (alias %s) at http://%s:%d/predict; docs at /docs", model.version, model.name,
             model.alias, _display(serve.host), serve.port)


def _display(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host
