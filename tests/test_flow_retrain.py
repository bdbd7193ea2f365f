"""The main job end to end: the Prefect `retrain` flow on a tiny sample, against Prefect's test harness
(a real temporary API server shared by the session), with MLflow in a workspace SQLite store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "sample.num_images=36",
    "sample.image_size=96",
    "sample.max_object_size=48",
    "train.image_size=96",
    "train.epochs=2",
    "train.batch_size=8",
    "train.fpn_channels=16",
    "train.num_workers=0",
    "evaluate.num_sample_images=4",
]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def repo_workspace(tmp_path: Path) -> Path:
    """A workspace laid out like the repository: params.yaml and dvc.yaml (the step graph)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, ws / name)
    return ws


@pytest.mark.slow
def test_retrain_flow_runs_every_step_and_caches_the_second_time(prefect_api: None, repo_workspace: Path) -> None:
    import mlflow

    from flows.retrain import retrain

    results = retrain(workspace=str(repo_workspace), overrides=TINY)
    assert list(results) == ["sample", "import", "validate", "split", "train", "evaluate"]

    metrics = json.loads((repo_workspace / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["test/map_50"] <= 1.0
    run_id = json.loads((repo_workspace / "reports/mlflow_run.json").read_text())["run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{repo_workspace / 'mlflow.db'}")
    run = mlflow.get_run(run_id)
    assert "test/map_50" in run.data.metrics and "val/map" in run.data.metrics
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["data.content_hash"]

    # Same params and data: the tasks are cache hits, so the checkpoint is not rewritten.
    checkpoint = repo_workspace / "models/best.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    retrain(workspace=str(repo_workspace), overrides=TINY)
    assert checkpoint.stat().st_mtime_ns == stamp

    # A lost output forces its step to run again instead of trusting the cache.
    (repo_workspace / "reports/metrics.json").unlink()
    retrain(workspace=str(repo_workspace), overrides=TINY)
    assert (repo_workspace / "reports/metrics.json").is_file()
    assert checkpoint.stat().st_mtime_ns == stamp
