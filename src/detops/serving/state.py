"""What the workers tell the API processes: one json file per worker, replaced atomically on every change.

LitServe's routes run in the API process, which holds no model; readiness (`/health`) and the served version
(`/model`) are read from these files. A worker writes its file when it starts loading, after each load, swap or
failure; a reader never sees half a file (write to a temporary name, then rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detops.atomic import write_json


class SharedState:
    """The folder of worker files of one server run."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def publish(self, worker: int, payload: dict[str, Any]) -> None:
        write_json(self.root / f"worker-{worker}.json", payload, indent=None)

    def workers(self) -> dict[int, dict[str, Any]]:
        """Every worker's last report, by worker id (a file caught mid-rename is skipped until the next read)."""
        out: dict[int, dict[str, Any]] = {}
        for path in sorted(self.root.glob("worker-*.json")):
            try:
                out[int(path.stem.removeprefix("worker-"))] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return out


def health(states: dict[int, dict[str, Any]], expected: int) -> tuple[bool, dict[str, Any]]:
    """(ready, body of /health): ready once every worker serves a loaded and warmed champion."""
    ready = [s for s in states.values() if s.get("champion")]
    errors = {str(w): s["error"] for w, s in states.items() if s.get("error")}
    ok = len(ready) >= expected
    body: dict[str, Any] = {"status": "ready" if ok else "loading", "workers_ready": len(ready),
                            "workers": expected}
    if ready:
        model = ready[0]["champion"]
        body["model"] = {"name": model["name"], "version": model["version"], "alias": model["alias"]}
        versions = sorted({str(s["champion"]["version"]) for s in ready})
        if len(versions) > 1:
            body["versions"] = versions  # mid-swap: workers switch one by one
    if errors:
        body["errors"] = errors
    return ok, body
