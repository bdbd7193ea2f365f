"""Keep DVC in step with a Prefect run, so a following `dvc repro` runs nothing and `dvc push` has the data.

Only when the run used the workspace's own params.yaml: a run with UI overrides computed outputs that
params.yaml does not describe, so `dvc.lock` is left alone (its lineage lives in MLflow) and the run says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detops.config import load_params
from detops.workspace import Workspace


def dvc_repo(ws: Workspace) -> bool:
    return (ws.root / ".dvc").is_dir() and (ws.root / "dvc.yaml").is_file()


def params_are_the_file(ws: Workspace) -> bool:
    path = ws.root / "params.yaml"
    return path.is_file() and load_params(path) == ws.params


@contextmanager
def dvc_repo_at(ws: Workspace) -> Iterator[Any]:
    """DVC's Repo for the workspace, with the process inside it: DVC resolves some stage paths against the
    current directory, so a flow started elsewhere would otherwise see the outputs as external."""
    from dvc.repo import Repo

    before = os.getcwd()
    os.chdir(ws.root)
    try:
        with Repo(str(ws.root)) as repo:
            yield repo
    finally:
        os.chdir(before)


def commit_stage(ws: Workspace, verb: str) -> None:
    """Record the stage's deps, params and outputs in dvc.lock (and its outputs in the DVC cache)."""
    with dvc_repo_at(ws) as repo:
        repo.commit(verb, force=True)


def sync_code_fingerprints(ws: Workspace) -> None:
    """Run what dvc.yaml's `code` stage runs and commit it, so each stage's code dep is this run's code."""
    from detops.pipeline import write_code_fingerprints

    write_code_fingerprints(ws)
    commit_stage(ws, "code")


def push(ws: Workspace) -> str:
    """Push the tracked data and outputs to the default remote, when one is configured."""
    with dvc_repo_at(ws) as repo:
        remote = repo.config.get("core", {}).get("remote")
        if not remote:
            return "no DVC remote configured: nothing pushed (dvc remote add -d NAME URL)"
        pushed = repo.push()
    return f"dvc push to {remote!r}: {pushed} file(s) uploaded"


def add(ws: Workspace, path: Path) -> None:
    """`dvc add` an accepted batch folder: DVC versions it and `dvc push` sends it to the remote."""
    with dvc_repo_at(ws) as repo:
        repo.add(str(path))
