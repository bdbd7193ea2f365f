"""Stateless runs: the retraining flow in an empty checkout (a git clone at a commit, deleted after the run; no disk
shared between runs) gets what it needs from the DVC remote on S3 (moto's server on loopback), runs only what is
stale, pushes what it made with DVC's run cache, and logs to an MLflow server on PostgreSQL whose artifacts are on
the same S3 (its endpoint in the server's environment only).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import _mlflow_server
import pytest
import yaml
from _requirements import POSTGRES_ENV, require_or_skip
from test_dvc import BIN, make_copy, sh
from test_flow_retrain import task_states

RESTORABLE = ("sample", "import", "validate")  # before split, which DVC's run cache does not keep (a persist output)
TRAINED = ("train", "evaluate", "export")


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def mlflow_on_s3(s3: str, s3_endpoint: str, tmp_path: Path) -> Iterator[_mlflow_server.Server]:
    try:
        server = _mlflow_server.start(f"{s3}/{tmp_path.name}/mlartifacts", {"MLFLOW_S3_ENDPOINT_URL": s3_endpoint})
    except _mlflow_server.Unavailable as exc:
        require_or_skip(False, f"PostgreSQL cannot run here, so there is no MLflow server to test against: {exc}",
                        POSTGRES_ENV)
    yield server
    server.stop()


@pytest.mark.slow
def test_runs_in_empty_checkouts_restore_every_stage_the_remote_holds(
        prefect_api: None, s3: str, mlflow_on_s3: _mlflow_server.Server, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    from flows.retrain import retrain

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_on_s3.url)
    origin = make_copy(tmp_path / "origin")
    (origin / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    params = yaml.safe_load((origin / "params.yaml").read_text(encoding="utf-8"))
    params["deploy"]["git_push"] = "detops/runs"  # each run's dvc.lock on a branch of its own
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    sh(str(BIN / "dvc"), "remote", "add", "-d", "shared", f"{s3}/{tmp_path.name}/dvc", cwd=origin)
    sh("git", "add", "-A", cwd=origin)
    sh("git", "commit", "-qm", "the team's DVC remote", cwd=origin)
    client = MlflowClient(mlflow_on_s3.url)

    notes: dict[str, list[str]] = {}

    def stateless_run(name: str) -> dict[str, str]:
        """The flow in a fresh clone of the origin's HEAD, which is deleted afterwards."""
        checkout = tmp_path / name
        sh("git", "clone", "-q", str(origin), str(checkout), cwd=tmp_path)
        state = retrain(workspace=str(checkout), return_state=True)
        assert state.is_completed(), state.message
        shutil.rmtree(checkout)
        notes[name] = state.result()["split"]["notes"]
        return task_states(state)

    def versions() -> list[str]:
        return sorted(v.version for v in client.search_model_versions())

    start = sh("git", "rev-parse", "HEAD", cwd=origin).strip()
    first = stateless_run("first")
    assert all(state == "Completed" for state in first.values()), first
    (branch,) = sh("git", "branch", "--list", "detops/runs/*", "--format=%(refname:short)", cwd=origin).split()
    assert sh("git", "rev-parse", "HEAD", cwd=origin).strip() == start  # the branch it started from: untouched
    assert sh("git", "rev-parse", f"{branch}^", cwd=origin).strip() == start
    assert "cmd: detops train" in sh("git", "show", f"{branch}:dvc.lock", cwd=origin)
    assert versions() == ["1"]
    run_id = client.get_model_version("detops-detector", "1").run_id
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "dvc.lock" in artifacts, artifacts  # the lineage of the run, with the data versions it read

    second = stateless_run("second")
    assert {verb: second[verb] for verb in (*RESTORABLE, *TRAINED)} == dict.fromkeys((*RESTORABLE, *TRAINED),
                                                                                       "Restored"), second
    assert second["split"] == "Completed" and second["promote"] == "Completed"  # split: quick, the same result
    assert any("splits logged with version 1 of the registry" in note for note in notes["second"]), notes["second"]
    assert versions() == ["1"]  # the same training run: nothing registered

    params["train"]["seed"] = int(params["train"]["seed"]) + 1
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    sh("git", "commit", "-qam", "another training seed", cwd=origin)
    third = stateless_run("third")
    assert {verb: third[verb] for verb in RESTORABLE} == dict.fromkeys(RESTORABLE, "Restored"), third
    assert {verb: third[verb] for verb in TRAINED} == dict.fromkeys(TRAINED, "Completed"), third
    assert versions() == ["1", "2"]  # the new training run is registered (and gated against the champion)
    assert client.get_model_version("detops-detector", "2").run_id != run_id
