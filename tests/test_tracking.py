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
    record = tracking.provenance(ws)
    assert record["git.commit"] == "unknown"  # tmp_path is not a git repository
    assert record["version.torch"]
