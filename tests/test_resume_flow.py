"""A retraining run killed with `kill -9` in the middle of `train` (a preempted spot node: the pod is gone with its
disk) goes on from its last checkpoint in the next run, in another fresh checkout, to the same best.ckpt and test
mAP as a run that was never interrupted, with `dvc status` clean and the workspace lock free. The checkpoint goes
through `paths.resume_store` on S3 (moto's server on loopback), the MLflow store is outside both checkouts.
`python -m flows.retrain` is run as `make demo` runs it, in clones of a fresh DVC repository with the tiny params."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_dvc import BIN, make_copy, sh, stale

EPOCHS = 4  # killed early in the second epoch: three epochs are left to lose


def set_params(root: Path, **sections: dict[str, Any]) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    for section, values in {"train": {"epochs": EPOCHS}, **sections}.items():
        raw[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    sh("git", "commit", "-qam", "four epochs", cwd=root)


def flow(root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a busy 2-core machine starts it slowly
    for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "flows.retrain"], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[str]) -> None:
    """The run and everything it started (its temporary Prefect server), whatever state the test is in."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)


def finish(process: subprocess.Popen[str]) -> str:
    try:
        out, _ = process.communicate(timeout=900)
    finally:
        stop(process)
    assert process.returncode == 0, out[-4000:]
    return out


def stored_checkpoints(store: str) -> list[str]:
    """The resume checkpoints (not their best-weights copies) in the resume store."""
    from detops.monitoring.landing import open_store

    found = open_store(store)
    return [p for p in found.fs.glob(found.path("*.ckpt")) if not p.endswith(".best-weights.ckpt")]


def kill_during_epoch_two(root: Path, store: str) -> int:
    """Start the flow, wait for the first epoch's checkpoint in the store, kill the whole run at a random moment
    after it; the epoch of the stored checkpoint."""
    from detops.monitoring.landing import open_store

    process = flow(root)
    try:
        deadline = time.monotonic() + 600
        while not stored_checkpoints(store):
            assert process.poll() is None, (process.stdout.read() if process.stdout else "")[-4000:]
            assert time.monotonic() < deadline, "no resume checkpoint in the store after 10 minutes"
            time.sleep(0.2)
        time.sleep(random.Random().uniform(0.0, 0.5))
    finally:
        stop(process)
    (checkpoint,) = stored_checkpoints(store)
    with open_store(store).fs.open(checkpoint, "rb") as fh:
        return int(torch.load(fh, map_location="cpu", weights_only=True)["epoch"])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_run_killed_during_train_goes_on_in_a_fresh_checkout_to_the_result_of_an_uninterrupted_run(
        tmp_path: Path, s3: str) -> None:
    straight = make_copy(tmp_path / "straight" / "detops")
    set_params(straight)
    finish(flow(straight))

    origin = make_copy(tmp_path / "origin" / "detops")
    store, tracking = f"{s3}/{tmp_path.name}/resume", f"sqlite:///{tmp_path / 'mlflow.db'}"
    set_params(origin, paths={"resume_store": store}, mlflow={"tracking_uri": tracking})
    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    sh("git", "clone", "-q", str(origin), str(killed), cwd=tmp_path)
    epoch = kill_during_epoch_two(killed, store)
    assert not (killed / "models/last.ckpt").exists(), "the run finished before the kill: the test proved nothing"
    shutil.rmtree(killed)  # the pod is gone with its disk

    sh("git", "clone", "-q", str(origin), str(resumed), cwd=tmp_path)
    out = finish(flow(resumed))
    assert "resuming the interrupted training" in out and f"(epoch {epoch + 1})" in out
    assert stored_checkpoints(store) == [] and not list((resumed / ".detops/resume").glob("*.ckpt"))
    got, want = weights(resumed / "models/best.ckpt"), weights(straight / "models/best.ckpt")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # bit-identical on CPU
    metrics = [json.loads((root / "reports/metrics.json").read_text()) for root in (resumed, straight)]
    assert metrics[0]["test/map"] == metrics[1]["test/map"] and metrics[0]["test/map_50"] == metrics[1]["test/map_50"]
    summary = json.loads((resumed / "reports/train.json").read_text())
    assert summary["epochs"] == EPOCHS

    import mlflow

    run_id = json.loads((resumed / "reports/mlflow_run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(tracking).get_run(run_id)
    assert "detops.resumed_after_step" in run.data.tags and run.info.status == "FINISHED"
    assert len(run.data.params) > 10  # the params were logged by the killed run, into this same run

    assert stale(sh(str(BIN / "dvc"), "status", cwd=resumed)) == []
    from filelock import FileLock

    from detops.locking import LOCK_FILE

    with FileLock(str(resumed / LOCK_FILE)).acquire(timeout=0):  # no lock left behind
        pass
