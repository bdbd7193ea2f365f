"""A LitServe endpoint that does nothing with what it parses: the framework's own ceiling on this machine, next to
`detops serve` in `serve_load.py` (and the live server `tests/test_serve_load.py` drives).

Configured as `detops serve` is on a CPU: one inference worker on `cpu` (never `auto`, which imports torch where there
is no `nvidia-smi`), 127.0.0.1, no `client.py`. Its request handler parses the body as LitServe does for `detops
serve` (a multipart form, or JSON), then drops it.

    .venv/bin/python benchmarks/noop_litserve.py PORT [MAX_BATCH_SIZE]
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation as an object (Request), and a
# string would make it pass the raw request on, which cannot cross to the worker process.
import sys
from typing import Any

import litserve as ls
from fastapi import Request


class NoOp(ls.LitAPI):
    """Module level: LitServe spawns its inference workers, which unpickle the API by its qualified name."""

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: Request) -> int:  # annotated Request: LitServe parses the form or the json
        return 0

    def predict(self, x: Any) -> Any:
        return x

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"detections": [], "model": {"version": "noop"}}


def serve(port: int, max_batch_size: int = 1) -> None:
    api = NoOp(max_batch_size=max_batch_size, batch_timeout=0.0 if max_batch_size == 1 else 0.005, api_path="/predict")
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, healthcheck_path="/health")
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
