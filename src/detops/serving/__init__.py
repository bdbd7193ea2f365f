"""`detops serve`: a registered model behind an HTTP API, following its registry alias with zero-downtime swaps.

LitServe runs it: the API process(es) answer HTTP (FastAPI), spawned inference workers hold the model and batch
requests dynamically. The API processes never hold a model, so what they report (readiness, the version, the
metrics) comes from state the workers share through files: `state` (one json per worker) and Prometheus'
multiprocess directory (`metrics`).

- `server`: the main process: settings, LitServer, routes, signals (imports no model runtime).
- `gate`: the API process's front door: API key, content type, body size, parsing, the image header check.
- `api` + `loop`: the LitAPI of the workers and the LitServe loop hook that tells it a response was queued.
- `worker`: what a worker does with a batch: route (champion, canary), predict, answer, offer shadows.
- `follow` + `fetch` + `loaded`: download, load and warm a version beside the served one, then switch.
- `routing`, `agreement`, `shadow`, `images`, `metrics`, `state`, `source`, `settings`: one concern each.

Importing this package is light; heavy libraries load inside functions.
"""
