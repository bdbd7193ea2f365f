"""The step graph, read from `dvc.yaml`: the one place that says what each step reads and writes.

`dvc repro` uses it directly; the Prefect tasks use it to key their cache on the same deps and params,
so the two ways of running the pipeline can never disagree about when a step is stale.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detops.errors import ParamsError
from detops.workspace import Workspace

_VAR = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


@dataclass(frozen=True)
class Stage:
    """One `dvc.yaml` stage, with `${param}` references resolved against the workspace params."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]


def load_stages(ws: Workspace, dvc_file: Path | None = None) -> dict[str, Stage]:
    path = dvc_file or ws.root / "dvc.yaml"
    if not path.is_file():
        raise ParamsError(f"{path}: dvc.yaml not found; the workspace must hold the pipeline definition.")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    flat = ws.params.flat()
    stages = {}
    for name, body in (spec.get("stages") or {}).items():
        outs = [*_names(body.get("outs")), *_names(body.get("metrics")), *_names(body.get("plots"))]
        stages[name] = Stage(
            name=name,
            cmd=str(body["cmd"]),
            deps=tuple(_resolve(d, flat, path) for d in _names(body.get("deps"))),
            outs=tuple(_resolve(o, flat, path) for o in outs),
            params=tuple(_names(body.get("params"))),
        )
    return stages


def _names(entries: list[Any] | None) -> list[str]:
    """DVC lists hold plain paths or one-key mappings ({path: options})."""
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def _resolve(text: str, flat: dict[str, Any], where: Path) -> str:
    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in flat:
            raise ParamsError(f"{where}: ${{{key}}} is not a param")
        return str(flat[key])

    return _VAR.sub(sub, text)


def fingerprint(ws: Workspace, stage: Stage) -> str:
    """Hash of the stage's params sections and the content of its deps (files and folders)."""
    digest = hashlib.sha256(stage.name.encode())
    sections = ws.params.to_dict()
    digest.update(json.dumps({s: sections.get(s) for s in stage.params}, sort_keys=True).encode())
    for dep in stage.deps:
        _hash_path(digest, ws.resolve(dep), dep)
    return digest.hexdigest()


def _hash_path(digest: Any, path: Path, label: str) -> None:
    digest.update(label.encode())
    if path.is_file():
        digest.update(_file_sha1(path).encode())
    elif path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(child.relative_to(path)).encode())
            digest.update(_file_sha1(child).encode())
    else:
        digest.update(b"<missing>")


def _file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def outputs_present(ws: Workspace, stage: Stage) -> bool:
    return all(ws.resolve(out).exists() for out in stage.outs)
