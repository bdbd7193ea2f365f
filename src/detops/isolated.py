"""The one rule for OpenVINO beside torch: every OpenVINO file the flow loads is loaded in a Python process of its own.

OpenVINO's runtime loaded beside torch in one long-lived process crashed that process later (a segmentation fault
in a test session that had loaded both, in torch training after the export tests had loaded OpenVINO; each alone ran
clean, and the two tests alone did not reproduce it). So the flow's process never imports openvino: export's scoring
and timing, promote's prediction reference and monitor's champion answers hand the work to `run_isolated`, which
runs one module-level function of detops in a fresh Python process, with JSON arguments, and returns its JSON
result. The child exits with its work done, its thread pools with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detops.inference.openvino_runtime import is_openvino_file
from detops.workspace import Workspace

TAIL_LINES = 8  # of the child's stderr, in the error of a child that died


class IsolatedProcessDied(RuntimeError):
    """The child exited with an error (a Python exception or a crash); its message names the function, the exit code
    and the child's last words."""


def needs_isolation(path: Path) -> bool:
    """Whether loading `path` must happen in a child: an OpenVINO file (`*.openvino.onnx`)."""
    return is_openvino_file(path)


def workspace_args(ws: Workspace) -> dict[str, Any]:
    """The workspace as a child's `root` and `params` arguments (the effective params, overrides included)."""
    return {"root": str(ws.root), "params": ws.params.to_dict()}


def child_workspace(root: str, params: dict[str, Any]) -> Workspace:
    """In the child: the workspace `workspace_args` described."""
    from detops.config.params import Params

    return Workspace.at(Path(root), Params.model_validate(params))


def run_isolated(function: Callable[..., Any], /, **kwargs: Any) -> Any:
    """`function(**kwargs)` run in a fresh Python process (its progress bars on this one's terminal); its arguments and
    result travel as JSON. Raises IsolatedProcessDied when the child does not come back with a result."""
    module, name = function.__module__, function.__qualname__
    if not module.startswith("detops.") or not name.isidentifier():
        raise ValueError(f"{module}.{name}: only a module-level function of detops can run in a child process")
    # The module is named in the child's command line, not imported here by a computed name: the caller imported it,
    # so it is in the caller's code graph (`detops.codegraph`) already.
    program = f"import sys; from {module} import {name}; from detops.isolated import serve; sys.exit(serve({name}))"
    with tempfile.TemporaryDirectory(prefix="detops-isolated-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps(kwargs), encoding="utf-8")
        done = subprocess.run([sys.executable, "-c", program, str(request), str(result)],
                              stdout=None, stderr=subprocess.PIPE, text=True, errors="replace", check=False)
        if done.returncode != 0 or not result.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-TAIL_LINES:])
            raise IsolatedProcessDied(f"the process running {module}.{name} exited with code {done.returncode}: "
                                      f"{tail}")
        sys.stderr.write(done.stderr)  # its warnings, where this process's own go
        return json.loads(result.read_text(encoding="utf-8"))


def serve(function: Callable[..., Any]) -> int:
    """In the child: `function` called with the request's arguments, its result written (argv: REQUEST RESULT)."""
    request, result = Path(sys.argv[1]), Path(sys.argv[2])
    outcome = function(**json.loads(request.read_text(encoding="utf-8")))
    result.write_text(json.dumps(outcome), encoding="utf-8")
    return 0
