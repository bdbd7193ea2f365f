"""What the step graph (`detops.steps.graph`) means on disk: resolved paths, content fingerprints for the
Prefect cache, the code fingerprint of each step, and the generated `dvc.yaml`.

A step is stale when its params sections, the content of its deps, the source of its code modules (as
installed, so a workspace outside the repository sees code changes too) or its outputs changed since it
last ran. DVC answers the same question from `dvc.lock`; the Prefect tasks answer it from the same
declaration and a small record per step under `.detops/`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from detops.codegraph import library_versions, reach
from detops.filehash import file_digest
from detops.steps.graph import STEPS, Out, Step
from detops.workspace import Workspace

STATE_DIR = ".detops"
CODE_DIR = f"{STATE_DIR}/code"


def resolve(ws: Workspace, template: str) -> Path:
    """A declared path with its `${param}` references filled in from the workspace params."""
    return ws.fill(template)


def output_paths(ws: Workspace, verb: str) -> dict[str, Path]:
    """Every output of `verb`, by name, as absolute paths."""
    return ws.outputs(verb)


# --- code -------------------------------------------------------------------------------------------

def code_files(step: Step) -> dict[str, Path]:
    """The module files the step's entry module reaches (`detops.codegraph`), by dotted name."""
    return reach(step.module).modules


def code_fingerprint(step: Step) -> str:
    """sha256 over the source of every module file the step reaches, as this interpreter would import them,
    and the versions of the result-deciding libraries they import."""
    found = reach(step.module)
    digest = hashlib.sha256()
    for module, path in found.modules.items():
        digest.update(f"{module}:".encode())
        digest.update(file_digest(path).encode())
    digest.update(json.dumps(library_versions(found.libraries), sort_keys=True).encode())
    return digest.hexdigest()


def write_code_fingerprints(ws: Workspace) -> dict[str, Path]:
    """`.detops/code/<step>.sha256` for every step: the code deps of a workspace outside the repository."""
    from detops.atomic import write_text

    folder = ws.root / CODE_DIR
    return {name: write_text(folder / f"{name}.sha256", code_fingerprint(step) + "\n")
            for name, step in STEPS.items() if step.dvc}


# --- the Prefect cache ------------------------------------------------------------------------------

def fingerprint(ws: Workspace, step: Step) -> str:
    """Hash of the step's params sections, the content of its deps and its code."""
    digest = hashlib.sha256(step.name.encode())
    sections = ws.params.to_dict()
    digest.update(json.dumps({s: sections.get(s) for s in step.params}, sort_keys=True).encode())
    for dep in step.deps:
        _hash_path(digest, resolve(ws, dep), dep)
    digest.update(code_fingerprint(step).encode())
    return digest.hexdigest()


def outputs_digest(ws: Workspace, step: Step) -> dict[str, str]:
    """Content hash of every output (`missing` for one that is not there)."""
    out = {}
    for item in step.outs:
        digest = hashlib.sha256()
        path = resolve(ws, item.path)
        _hash_path(digest, path, item.name)
        out[item.name] = digest.hexdigest() if path.exists() else "missing"
    return out


def record_path(ws: Workspace, step: Step) -> Path:
    return ws.root / STATE_DIR / "runs" / f"{step.name}.json"


def record_run(ws: Workspace, step: Step, key: str) -> None:
    """After a step ran: the inputs key it ran with and the outputs it left."""
    from detops.atomic import write_json

    write_json(record_path(ws, step), {"key": key, "outputs": outputs_digest(ws, step)})


def is_current(ws: Workspace, step: Step, key: str) -> bool:
    """True when the outputs on disk are the ones the last run with these inputs left (none lost or edited)."""
    path = record_path(ws, step)
    if not path.is_file():
        return False
    recorded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if recorded.get("key") != key:  # inputs changed: no need to hash the outputs (checkpoints are large)
        return False
    current = outputs_digest(ws, step)
    return recorded.get("outputs") == current and "missing" not in current.values()


def _hash_path(digest: Any, path: Path, label: str) -> None:
    digest.update(label.encode())
    if path.is_file():
        digest.update(file_digest(path).encode())
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(file_digest(child).encode())
    else:
        digest.update(b"<missing>")




# --- dvc.yaml ---------------------------------------------------------------------------------------

HEADER = (
    "# Generated by `detops dvc-yaml` from detops.steps.graph: edit the declaration, not this file.\n"
    "# One stage per pipeline verb; each calls the same `detops <verb>` the Prefect tasks call.\n"
)
PLOTS = [
    {"pr_curve": {"template": "simple", "x": "recall", "y": {"${paths.reports}/plots/pr_curves.csv": "precision"}}},
    {"confusion": {"template": "confusion", "x": "predicted",
                   "y": {"${paths.reports}/plots/confusion.csv": "actual"}}},
]


def code_deps(root: Path, step: Step) -> list[str] | None:
    """The step's code as source files inside `root` (the repository), or None when it is installed elsewhere."""
    out = []
    for path in code_files(step).values():
        try:
            out.append(path.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            return None
    return sorted(out)


def dvc_stages(root: Path) -> dict[str, Any]:
    """The stages for a workspace at `root`: code deps as source paths inside the repository, or as the
    fingerprint files of a `code` stage (always run, cheap) in a workspace outside it. A step declared with
    `dvc=False` (`monitor`) is no stage."""
    stages: dict[str, Any] = {}
    staged = {name: step for name, step in STEPS.items() if step.dvc}
    inside = all(code_deps(root, step) is not None for step in staged.values())
    if not inside:
        stages["code"] = {
            "cmd": "detops code-fingerprint",
            "always_changed": True,
            "outs": [{f"{CODE_DIR}/{name}.sha256": {"cache": False}} for name in staged],
        }
    for name, step in staged.items():
        code = code_deps(root, step) if inside else [f"{CODE_DIR}/{name}.sha256"]
        body: dict[str, Any] = {"cmd": f"detops {name}", "deps": [*step.deps, *(code or [])],
                                "params": list(step.params)}
        for kind, key in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
            entries = [_dvc_out(o) for o in step.outs if o.kind == kind]
            if entries:
                body[key] = entries
        stages[name] = body
    return stages


def _dvc_out(out: Out) -> Any:
    """A plain path, or `{path: {cache: false, persist: true}}` where the defaults do not hold."""
    options: dict[str, bool] = {}
    if not out.cache:
        options["cache"] = False
    if out.persist:
        options["persist"] = True
    return {out.path: options} if options else out.path


def dvc_yaml(root: Path) -> str:
    spec = {"stages": dvc_stages(root), "plots": PLOTS}
    return HEADER + yaml.safe_dump(spec, sort_keys=False, width=120)
