"""`detops serve`: a registered model behind an HTTP API, following its registry alias with zero-downtime swaps.

One process per replica: uvicorn runs the app (FastAPI) on its event loop; an inference thread per model holds its
request queue and answers it in batches; scale with Kubernetes replicas (deployments/k8s), not processes.

- `server`: the process: settings, the app, uvicorn, shutdown (imports no model runtime).
- `gate`: the front door: API key, request id, content type, body size, parsing once, the image header check.
- `routes`: /predict, /health, /model, /metrics.
- `engine`: a queue and an inference thread per model, the load-adaptive batching, canary routing, shadows, capture.
- `follow` + `loaded`: download (`registry.files`), load and warm a version beside the served one, then switch.
- `settings`, `routing`, `agreement`, `capture` (its batches: `monitoring.delivery`), `images`,
  `metrics`: one each.

Importing this package is light; heavy libraries load inside functions.
"""
