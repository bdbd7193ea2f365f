"""The server's front door, an ASGI middleware around the app.

Every request: the API key (all routes but /health; DETOPS_SERVE_API_KEY, from the environment since a credential
is never a param; sent as `X-API-Key: KEY` or `Authorization: Bearer KEY`), a request id (`X-Request-Id`, checked,
or made; echoed on every response), and the request counter and latency histogram. `POST /predict` also: content
type (415), body size (413, checked on Content-Length and again while reading, so a chunked body meets the same
cap), the body parsed once (multipart field `image`, JSON `{"image": base64}` decoded strictly, or a raw `image/*`
body; 400 when malformed or empty), and the image header (400 when it is no image, 413 above `serve.max_pixels`),
all before anything is decoded. The handler finds the image's bytes and the request id in the scope (`IMAGE`,
`REQUEST_ID`).
"""

from __future__ import annotations

import binascii
import hmac
import io
import json
import os
import time
from typing import Any

from detops.serving.images import Rejected, read_header
from detops.serving.metrics import metrics
from detops.serving.routing import REQUEST_ID_HEADER, request_id

IMAGE = "detops.image"  # scope keys the gate sets for the handler
REQUEST_ID = "detops.request_id"
ROUTES = frozenset({"/predict", "/health", "/model", "/metrics", "/docs", "/openapi.json"})
API_KEY_ENV = "DETOPS_SERVE_API_KEY"
ACCEPTED = "multipart/form-data (field `image`), application/json ({\"image\": \"<base64>\"}) or image/*"
THREAD_ABOVE = 256 * 1024  # parse bodies larger than this in a thread, off the event loop


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


def key_problem(headers: dict[str, str]) -> str | None:
    """Why a request with these headers is not authorised, or None when it is (or no key is set)."""
    expected = os.environ.get(API_KEY_ENV)
    if not expected:
        return None
    scheme, _, value = headers.get("authorization", "").partition(" ")
    sent = headers.get("x-api-key", value.strip() if scheme.lower() == "bearer" else None)
    if sent is None:
        return "this server needs an API key: send it as X-API-Key or Authorization: Bearer"
    return None if hmac.compare_digest(sent.encode(), expected.encode()) else "wrong API key"


def form_image(body: bytes, content_type: str) -> bytes:
    """The multipart body's first `image` field, parsed by `multipart` (Bottle's parser), all in memory (the body's
    size is capped before it is read); a malformed body, or one without that field, is a 400 that says how."""
    import multipart

    boundary = multipart.parse_options_header(content_type)[1].get("boundary")
    if not boundary:
        raise Rejected(400, "the multipart body has no boundary in its Content-Type")
    names = []
    try:
        for part in multipart.MultipartParser(io.BytesIO(body), boundary, len(body), memory_limit=len(body) + 1,
                                              spool_limit=len(body) + 1):
            if part.name == "image":
                return bytes(part.raw)
            names.append(part.name)
    except multipart.MultipartError as exc:
        raise Rejected(400, f"malformed multipart body: {exc}") from None
    raise Rejected(400, f"the multipart body has no `image` field (fields: {', '.join(sorted(names)) or 'none'}).")


class Gate:
    """Pure ASGI (no BaseHTTPMiddleware): the body is read and parsed once, here."""

    def __init__(self, app: Any, max_body: int, max_pixels: int) -> None:
        self.app, self.max_body, self.max_pixels = app, max_body, max_pixels

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = str(scope.get("path", ""))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        status = [500]
        rid, bad_id = request_id(headers.get(REQUEST_ID_HEADER))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REQUEST_ID_HEADER.encode(), rid.encode())]}
            await send(message)

        async def refuse(code: int, detail: str) -> None:
            from starlette.responses import JSONResponse

            extra = {"WWW-Authenticate": "Bearer"} if code == 401 else None
            await JSONResponse({"detail": detail, "request_id": rid}, status_code=code, headers=extra)(
                scope, receive, send_with_id)

        try:
            problem = None if path == "/health" else key_problem(headers)
            if problem:
                await refuse(401, problem)
            elif bad_id:
                await refuse(400, bad_id)
            elif path == "/predict" and scope.get("method") == "POST":
                try:
                    image = await self.image(headers, receive)
                except Rejected as exc:
                    await refuse(exc.status, exc.detail)
                else:
                    await self.app({**scope, IMAGE: image, REQUEST_ID: rid}, receive, send_with_id)
            else:
                await self.app({**scope, REQUEST_ID: rid}, receive, send_with_id)
        except ClientGone:
            status[0] = 499  # nginx's code for it: nothing was sent
        finally:
            route = path if path in ROUTES else "other"
            metrics().requests.labels(route, str(status[0])).inc()
            metrics().latency.labels(route).observe(time.perf_counter() - started)

    async def image(self, headers: dict[str, str], receive: Any) -> bytes:
        """The image file's bytes, header checked, or Rejected with the status the client should get."""
        content_type = headers.get("content-type", "").strip()
        media = content_type.split(";", 1)[0].strip().lower()
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise Rejected(413, self._too_large(int(length)))
        if media and not (media in ("multipart/form-data", "application/json") or media.startswith("image/")
                          or media.endswith("+json")):
            raise Rejected(415, f"Content-Type {media!r} is not accepted; send {ACCEPTED}.")
        body = await self._read(receive)
        if not body:
            raise Rejected(400, f"the request body is empty; send {ACCEPTED}.")
        if not media:
            raise Rejected(415, f"the request has no Content-Type; send {ACCEPTED}.")
        if len(body) > THREAD_ABOVE:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(self._parse, media, content_type, body)
        return self._parse(media, content_type, body)

    def _parse(self, media: str, content_type: str, body: bytes) -> bytes:
        if media == "application/json" or media.endswith("+json"):
            data = _json_image(body)
        else:
            data = form_image(body, content_type) if media == "multipart/form-data" else body
        read_header(data, self.max_pixels)
        return data

    async def _read(self, receive: Any) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise Rejected(413, self._too_large(None))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int | None) -> str:
        what = f"{size:,} bytes" if size is not None else "larger"
        return (f"the request body is {what}, more than the {self.max_body:,} allowed (serve.max_body_mb); "
                "send a smaller image.")


def _json_image(body: bytes) -> bytes:
    """The decoded `image` member of a JSON object body; a data URL prefix is allowed."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(400, f"malformed JSON body ({exc}); send {{\"image\": \"<base64>\"}}.") from None
    except RecursionError:
        raise Rejected(400, "malformed JSON body: nested too deeply; send {\"image\": \"<base64>\"}.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
        raise Rejected(400, "the JSON body must be an object with an `image` string (the file, base64-encoded).")
    text: str = payload["image"]
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]  # data:image/png;base64,....
    try:  # strict: nothing outside the alphabet, padding only at the end (at C speed); lines may be wrapped
        return binascii.a2b_base64("".join(text.split()).encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError):
        raise Rejected(400, "`image` is not valid base64.") from None
