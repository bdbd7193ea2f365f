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
import gc
import logging
import shutil
import tempfile
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

    logger = logging.getLogger("detops.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s detops.serve[%(process)d]: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    runtime = Path(tempfile.mkdtemp(prefix="detops-serve-"))
    try:
        settings = settings_for(ws, runtime)
        serve_params = settings.serve
        host = "127.0.0.1" if serve_params.host in ("0.0.0.0", "::") else serve_params.host
        log.info("serving %s at http://%s:%d/predict once ready (docs at /docs; batches of up to %d, %s)",
                 settings.champion, host, serve_params.port, serve_params.max_batch_size,
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
        gc.freeze()  # the imports' objects leave the collector's generations: shorter pauses while serving
        yield
        log.info("stopping: sealing the open capture batch and deleting this run's downloads")
        engine.close()
        shutil.rmtree(settings.runtime, ignore_errors=True)

    return build_app(settings, engine, lifespan)
