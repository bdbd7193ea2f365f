"""The HTTP app: `POST /predict`, `/health` (open, for probes), `/model`, `/metrics` and the OpenAPI docs, behind
the gate (API key, request id, limits, parsing). FastAPI for the docs it writes; the handlers take the request
as it is (the gate parsed the body already), so its validation costs nothing per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from detops.serving.engine import Engine
from detops.serving.follow import FAILED_POLLS_SHOWN
from detops.serving.gate import IMAGE, REQUEST_ID, Gate
from detops.serving.metrics import render
from detops.serving.settings import ServeSettings

IMAGE_FIELD = {"type": "object", "required": ["image"], "properties": {"image": {"type": "string"}}}
BODIES = {"multipart/form-data": {"schema": IMAGE_FIELD}, "application/json": {"schema": IMAGE_FIELD},
          "image/*": {"schema": {"type": "string", "format": "binary"}}}


def build_app(settings: ServeSettings, engine: Engine, lifespan: Any) -> Any:
    """The FastAPI app with its routes, wrapped in the gate (outermost)."""
    app = FastAPI(title="detops serve", summary=f"Object detection by {settings.champion}", lifespan=lifespan)

    @app.post("/predict", tags=["serving"], summary="Detect objects in one image",
              openapi_extra={"requestBody": {"required": True, "content": BODIES}})
    async def predict(request: Request) -> Response:
        """The image as multipart (field `image`), as JSON `{"image": "<base64>"}` or as a raw `image/*` body.
        Send `X-Request-Id` to choose the id (canary routing hashes it). The answer: `detections` (category_id,
        class_name, score, COCO bbox in the image's pixels), `model` (name, version, alias) and `request_id`;
        `X-Model-Version` names the version too. Errors: 400 bad image or body, 401 API key
        (DETOPS_SERVE_API_KEY), 413 over serve.max_body_mb or serve.max_pixels, 415 content type, 503 no model
        loaded yet, 504 waited over serve.timeout."""
        outcome = await engine.submit(request.scope[IMAGE], request.scope[REQUEST_ID])
        return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)

    @app.get("/health", tags=["serving"], summary="Ready once a model is loaded and answers")
    def health_route() -> JSONResponse:
        ok, body = health(engine)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/model", tags=["serving"], summary="The served model: version, alias, run, classes, thresholds")
    def model_route() -> JSONResponse:
        return JSONResponse(model_description(engine, settings))

    @app.get("/metrics", tags=["serving"], summary="Prometheus metrics of this server")
    def metrics_route() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    return Gate(app, int(settings.serve.max_body_mb * 2**20), settings.serve.max_pixels)


def health(engine: Engine) -> tuple[bool, dict[str, Any]]:
    """(ready, body of /health): ready while a champion serves. A registry outage is said in the body but keeps
    the 200 (a 503 would fail every replica's readiness probe while each still answers)."""
    champion = engine.champion.current
    body: dict[str, Any] = {"status": "ready" if champion else "loading"}
    if champion is not None:
        body["model"] = champion.info.answer()
    if errors := {f.role: f.error for f in engine.followers if f.error}:
        body["errors"] = errors
    if failing := {f.role: f"the last {f.failed_polls} polls of {f.source} failed; serving what was loaded before"
                   for f in engine.followers if f.failed_polls >= FAILED_POLLS_SHOWN}:
        body["following"] = failing
    return champion is not None, body


def model_description(engine: Engine, settings: ServeSettings) -> dict[str, Any]:
    """The champion as served, the challenger likewise, and the traffic shares."""
    champion = engine.champion.current
    challenger = engine.challenger.current if engine.challenger else None
    return {**(champion.info.to_dict() if champion else {"status": "loading"}), "source": str(settings.champion),
            "challenger": challenger.info.to_dict() if challenger else None, "error": engine.champion.error,
            "canary_share": settings.serve.canary_share, "shadow_share": settings.serve.shadow_share}
