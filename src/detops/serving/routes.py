"""The routes of the API process besides LitServe's `/predict`: `/health` (open, for probes), `/model` and
`/metrics`, and the OpenAPI description of `/predict` (LitServe types it as a bare request)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from fastapi.responses import JSONResponse, Response

from detops.serving.metrics import render
from detops.serving.settings import ServeSettings
from detops.serving.state import SharedState, health

DETECTION_SCHEMA = {
    "type": "object",
    "properties": {
        "category_id": {"type": "integer", "description": "The dataset's category id."},
        "class_name": {"type": "string"},
        "score": {"type": "number"},
        "bbox": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                 "description": "x, y, width, height in the image's own pixels (COCO)."},
    },
}
PREDICT_OPENAPI: dict[str, Any] = {
    "summary": "Detect objects in one image",
    "description": "The image as multipart (field `image`), as JSON `{\"image\": \"<base64>\"}` or as a raw "
                   "`image/*` body. Send `X-Request-Id` to choose the id (canary routing hashes it). The answer "
                   "names the model version that gave it, in the body and in `X-Model-Version`.",
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}}}},
        "application/json": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "byte", "description": "The image file, base64."}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }},
    "responses": {
        "200": {"description": "Detections", "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "detections": {"type": "array", "items": DETECTION_SCHEMA},
                "model": {"type": "object", "properties": {"name": {"type": "string"},
                                                           "version": {"type": "string"},
                                                           "alias": {"type": "string", "nullable": True}}},
                "request_id": {"type": "string"}}}}}},
        "400": {"description": "Not an image, truncated, malformed JSON or multipart, empty body"},
        "401": {"description": "Missing or wrong API key (DETOPS_SERVE_API_KEY is set)"},
        "413": {"description": "Body over serve.max_body_mb, or image over serve.max_pixels"},
        "415": {"description": "Content type other than multipart/form-data, application/json, image/*"},
        "503": {"description": "No model loaded yet"},
    },
}


def add_routes(app: Any, settings: ServeSettings, authorize: Any) -> None:
    """Mount /health, /model and /metrics on LitServe's FastAPI app and describe /predict."""
    state = SharedState(settings.state_dir)
    workers = settings.serve.workers

    @app.get("/health", tags=["serving"], summary="Ready once every worker serves a loaded, warmed model")
    def health_route() -> JSONResponse:
        ok, body = health(state.workers(), workers)
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/model", tags=["serving"], summary="The served model: version, alias, run, classes, thresholds",
             dependencies=[Depends(authorize)])
    def model_route() -> JSONResponse:
        return JSONResponse(model_description(state.workers(), settings), status_code=200)

    @app.get("/metrics", tags=["serving"], summary="Prometheus metrics of every server process",
             dependencies=[Depends(authorize)])
    def metrics_route() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    for route in app.routes:
        if getattr(route, "path", None) == "/predict":
            route.openapi_extra = PREDICT_OPENAPI
            route.tags = ["serving"]


def model_description(states: dict[int, dict[str, Any]], settings: ServeSettings) -> dict[str, Any]:
    """The champion as the first ready worker serves it, the challenger likewise, and each worker's versions."""
    ready = [s for _, s in sorted(states.items()) if s.get("champion")]
    body: dict[str, Any] = dict(ready[0]["champion"]) if ready else {"status": "loading"}
    body["source"] = str(settings.champion)
    challengers = [s["challenger"] for s in ready if s.get("challenger")]
    body["challenger"] = challengers[0] if challengers else None
    body["canary_share"] = settings.serve.canary_share
    body["shadow_share"] = settings.serve.shadow_share
    body["workers"] = {str(w): {"champion": (s.get("champion") or {}).get("version"),
                                "challenger": (s.get("challenger") or {}).get("version"),
                                "error": s.get("error"), "pid": s.get("pid")} for w, s in sorted(states.items())}
    return body
