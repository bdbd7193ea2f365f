"""A retraining run killed with `kill -9` in the middle of `train` (a preempted machine, a rebooted worker) goes on
from its last checkpoint in the next run, to the same best.ckpt and test mAP as a run that was never interrupted,
with `dvc status` clean and the workspace lock free. `python -m flows.retrain` is run as `make demo` runs it, in a
fresh DVC repository with the tiny params."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_dvc import BIN, make_copy, sh, stale

EPOCHS = 4  # killed early in the second epoch: three epochs are left to lose


def set_epochs(root: Path) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    raw["train"]["epochs"] = EPOCHS
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


def resume_checkpoints(root: Path) -> list[Path]:
    folder = root / ".detops/resume"
    return [p for p in folder.glob("*.ckpt") if not p.name.endswith(".best-weights.ckpt")] if folder.is_dir() else []


def kill_during_epoch_two(root: Path) -> int:
    """Start the flow, wait for the first epoch's checkpoint, kill the whole run at a random moment after it."""
    process = flow(root)
    try:
        deadline = time.monotonic() + 600
        while not resume_checkpoints(root):
            assert process.poll() is None, (process.stdout.read() if process.stdout else "")[-4000:]
            assert time.monotonic() < deadline, "no resume checkpoint after 10 minutes"
            time.sleep(0.05)
        time.sleep(random.Random().uniform(0.0, 0.5))
    finally:
        stop(process)
    return int(torch.load(resume_checkpoints(root)[0], map_location="cpu", weights_only=True)["epoch"])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_a_run_killed_during_train_goes_on_to_the_result_of_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = make_copy(tmp_path / "straight" / "detops")
    set_epochs(straight)
    finish(flow(straight))

    killed = make_copy(tmp_path / "killed" / "detops")
    set_epochs(killed)
    epoch = kill_during_epoch_two(killed)
    assert not (killed / "models/last.ckpt").exists(), "the run finished before the kill: the test proved nothing"
    # what a kill in the middle of the next checkpoint write leaves: a half-written temporary beside the file
    (killed / ".detops/resume/.half.ckpt.x.tmp").write_bytes(b"\x80\x02half a checkpoint")

    out = finish(flow(killed))
    assert "resuming the interrupted training" in out and f"(epoch {epoch + 1})" in out
    assert resume_checkpoints(killed) == [] and not list((killed / ".detops/resume").glob(".*.tmp"))
    got, want = weights(killed / "models/best.ckpt"), weights(straight / "models/best.ckpt")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)  # bit-identical on CPU
    metrics = [json.loads((root / "reports/metrics.json").read_text()) for root in (killed, straight)]
    assert metrics[0]["test/map"] == metrics[1]["test/map"] and metrics[0]["test/map_50"] == metrics[1]["test/map_50"]
    summary = json.loads((killed / "reports/train.json").read_text())
    assert summary["epochs"] == EPOCHS

    import mlflow

    run_id = json.loads((killed / "reports/mlflow_run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{killed / 'mlflow.db'}").get_run(run_id)
    assert "detops.resumed_after_step" in run.data.tags and run.info.status == "FINISHED"
    assert len(run.data.params) > 10  # the params were logged by the killed run, into this same run

    assert stale(sh(str(BIN / "dvc"), "status", cwd=killed)) == []
    from filelock import FileLock

    from detops.locking import LOCK_FILE

    with FileLock(str(killed / LOCK_FILE)).acquire(timeout=0):  # no lock left behind by the killed run
        pass
