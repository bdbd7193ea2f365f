"""`detops serve`: a registered model behind an HTTP API, following its registry alias with zero-downtime swaps.

One process per replica: uvicorn runs the app (FastAPI) on its event loop; an inference thread holds the request
queue and answers it in batches; scale with Kubernetes replicas (deployments/k8s), not processes.

- `server`: the process: settings, the app, uvicorn, shutdown (imports no model runtime).
- `gate`: the front door: API key, request id, content type, body size, parsing once, the image header check.
- `routes`: /predict, /health, /model, /metrics.
- `engine`: the queue, the load-adaptive batching and the inference thread; canary routing; shadows and capture.
- `follow` + `fetch` + `loaded`: download, load and warm a version beside the served one, then switch.
- `routing`, `agreement`, `shadow`, `capture`, `images`, `multipart`, `metrics`, `source`, `settings`: one each.

Importing this package is light; heavy libraries load inside functions.
"""
