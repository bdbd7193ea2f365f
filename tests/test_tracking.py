"""Where MLflow runs go: the workspace store by default, never the previous workspace's."""

from __future__ import annotations

from pathlib import Path

import pytest

from detops import tracking
from detops.config import load_params
from detops.workspace import Workspace


def test_configuring_one_workspace_does_not_redirect_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = Workspace.at(tmp_path / "a", load_params(None))
    second = Workspace.at(tmp_path / "b", load_params(None))
    first.root.mkdir()
    tracking.configure(first)
    assert tracking.tracking_uri(second) == f"sqlite:///{second.root / 'mlflow.db'}"


def test_environment_and_params_override_the_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(Workspace.at(tmp_path, load_params(None))) == "http://127.0.0.1:5000"
    pinned = Workspace.at(tmp_path, load_params(None, ["mlflow.tracking_uri=sqlite:////x.db"]))
    assert tracking.tracking_uri(pinned) == "sqlite:////x.db"


def test_provenance_names_commit_versions_and_data(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(None))
    record = tracking.provenance(ws, "train")
    assert record["git.commit"] == "unknown"  # tmp_path is not a git repository
    assert record["version.torch"]
    assert "code.source" not in record  # no deployment said where the code came from


def test_provenance_says_where_a_deployed_runs_code_came_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.CODE_SOURCE_ENV, "git_clone https://git.example.com/detops.git@0123abc")
    record = tracking.provenance(Workspace.at(tmp_path, load_params(None)), "train")
    assert record["code.source"] == "git_clone https://git.example.com/detops.git@0123abc"


BOUNDED_CLIENT = """
import json, os, sys
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT
from detops.config import load_params
from detops.tracking import mlflow_client
from detops.workspace import Workspace

assert not any(v.startswith("MLFLOW_HTTP_") for v in os.environ), "the test must start with no bound set"
ws = Workspace.at(sys.argv[1], load_params(None, ["mlflow.http_timeout=3", "mlflow.http_max_retries=1"]))
seen = []
for left_over in (None, ("600", "9")):  # nothing ran before; then something left looser bounds behind
    if left_over:
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = left_over
    client = mlflow_client(ws)
    seen.append([MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), client.tracking_uri])
print(json.dumps(seen))
"""


def test_every_client_from_the_factory_is_bounded_whatever_ran_before(tmp_path: Path) -> None:
    """In a fresh process where nothing set MLflow's request bounds (MLflow reads them from the environment at each
    request), the factory's client is bounded by the params, and stays so after something loosened them."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_") and k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", BOUNDED_CLIENT, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[3, 1, store], [3, 1, store]]


def test_only_the_factory_builds_an_mlflow_client() -> None:
    """Steps, flows, tasks and the registry get their client from `tracking.mlflow_client`, so none is unbounded."""
    root = Path(__file__).resolve().parents[1]
    builders = [f"{path.relative_to(root)}: {line.strip()}"
                for folder in ("src", "flows", "tasks") for path in sorted((root / folder).rglob("*.py"))
                for line in path.read_text(encoding="utf-8").splitlines() if "MlflowClient(" in line]
    assert builders == ["src/detops/tracking.py: return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)"]


def test_a_flow_run_records_the_git_state_it_started_with_and_names_edits(tmp_path: Path) -> None:
    """The flow takes the git state at its start: the run's own dvc.lock update later is no user edit; an edit
    made before the start is named."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.email=ci@detops.invalid", "-c", "user.name=ci", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    git("init", "-q")
    for name in ("dvc.lock", "notes.txt", "untracked-later.txt"):
        (tmp_path / name).write_text("v1\n")
    git("add", "dvc.lock", "notes.txt")
    git("commit", "-qm", "one")
    ws = Workspace.at(tmp_path, load_params(None))
    record = tracking.provenance(ws, "train")
    assert record["git.dirty"] == "false" and "git.dirty_files" not in record
    with tracking.git_state_at_start(tmp_path) as started:
        (tmp_path / "dvc.lock").write_text("v2\n")  # what the run's own steps write
        assert started["git.dirty"] == "false"
        assert tracking.provenance(ws, "train")["git.dirty"] == "false"
        assert tracking.git_commit(tmp_path)["git.dirty_files"] == "dvc.lock"  # the tree now: dirty
    assert tracking.provenance(ws, "train")["git.dirty_files"] == "dvc.lock"  # outside a flow run: the tree as it is
    (tmp_path / "notes.txt").write_text("an edit\n")
    with tracking.git_state_at_start(tmp_path):
        assert tracking.provenance(ws, "train")["git.dirty"] == "true"
        assert tracking.provenance(ws, "train")["git.dirty_files"] == "dvc.lock, notes.txt"
