"""`dvc repro` on a laptop: a fresh copy of the repository (git repo with a commit) runs every stage once,
then nothing; `dvc exp run -S train.epochs=1` re-runs train and what follows only; push, drop the cache,
pull, and `dvc status` is clean."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {
    "sample": {"num_images": 36, "image_size": 96, "max_object_size": 48},
    "validate": {"data_docs": False},
    # warmup_epochs < 1: the cosine starts inside epoch 1, so its weights depend on `epochs` (with a whole
    # warm-up epoch, `-S train.epochs=1` would rebuild the same best.ckpt and rightly stop at train).
    "train": {"image_size": 96, "epochs": 2, "warmup_epochs": 0.5, "batch_size": 8, "fpn_channels": 16,
              "num_workers": 0},
    "evaluate": {"num_sample_images": 4},
    "export": {"latency_runs": 3, "warmup_runs": 0, "calibration_images": 4},
}


def tiny_params(path: Path) -> None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    for section, values in TINY.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def sh(*args: str, cwd: Path, **extra_env: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DO_NOT_TRACK": "1", **extra_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def stages_run(output: str) -> list[str]:
    """The pipeline stages a `dvc repro` ran; `code` (the code fingerprints, always run) is left out."""
    return [s for s in re.findall(r"Running stage '([^']+)'", output) if s != "code"]


def stale(status: str) -> list[str]:
    """The stages `dvc status` names, but `code`, which it always lists ("always changed"): [] is clean."""
    return [s for s in re.findall(r"^(\w+):$", status, flags=re.MULTILINE) if s != "code"]


def make_copy(root: Path) -> Path:
    """The repository's tracked pipeline files in a new git repository with one commit, DVC initialised."""
    tracked = sh("git", "ls-files", "dvc.yaml", "params.yaml", "src", ".dvcignore", "data", cwd=REPO).split()
    for name in tracked:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    tiny_params(root / "params.yaml")
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n/.detops/\n/.cache/\n")
    sh("git", "init", "-q", cwd=root)
    sh("git", "config", "user.email", "ci@detops.invalid", cwd=root)
    sh("git", "config", "user.name", "ci", cwd=root)
    sh(str(BIN / "dvc"), "init", "-q", cwd=root)
    sh(str(BIN / "dvc"), "remote", "add", "-d", "local", str(root.parent / "remote"), cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-qm", "fresh copy", cwd=root)
    return root


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield make_copy(tmp_path_factory.mktemp("dvc") / "detops")


@pytest.mark.slow
def test_repro_runs_every_stage_then_nothing_then_only_what_a_param_touches(copy: Path) -> None:
    dvc = str(BIN / "dvc")
    first = stages_run(sh(dvc, "repro", cwd=copy))
    assert first == ["sample", "import", "validate", "split", "train", "evaluate", "export", "promote"]
    assert stages_run(sh(dvc, "repro", cwd=copy)) == []
    sh("git", "add", "-A", cwd=copy)
    sh("git", "commit", "-qm", "first repro", cwd=copy)
    exp = stages_run(sh(dvc, "exp", "run", "-S", "train.epochs=1", cwd=copy))
    assert exp == ["train", "evaluate", "export", "promote"]


@pytest.mark.slow
def test_an_edit_of_shared_code_makes_every_stage_that_imports_it_stale(copy: Path) -> None:
    """The mAP code is reached by train (its validation mAP), evaluate, export (every variant's score) and
    promote (the champion's re-score): a comment appended to it makes exactly those stages stale."""
    dvc = str(BIN / "dvc")
    if not (copy / "dvc.lock").is_file():
        sh(dvc, "repro", cwd=copy)
    assert stale(sh(dvc, "status", cwd=copy)) == []
    # the copy's own source is what runs (as in a user's editable install of their clone)
    env = {"PYTHONPATH": str(copy / "src")}
    metric = copy / "src/detops/evaluation/map_metric.py"
    original = metric.read_text(encoding="utf-8")
    metric.write_text(original + "\n# edited\n", encoding="utf-8")
    try:
        sh(str(BIN / "detops"), "code-fingerprint", cwd=copy, **env)  # what `dvc repro` runs first
        status = sh(dvc, "status", cwd=copy)
    finally:
        metric.write_text(original, encoding="utf-8")
        sh(str(BIN / "detops"), "code-fingerprint", cwd=copy, **env)
    assert stale(status) == ["train", "evaluate", "export", "promote"], status
    assert ".detops/code/train.sha256" in status


KEYS = """
import json
from pathlib import Path
from detops.config import load_params
from detops.pipeline import fingerprint
from detops.steps.graph import STEPS
from detops.workspace import Workspace
ws = Workspace.at(Path.cwd(), load_params(Path("params.yaml")))
print(json.dumps({name: fingerprint(ws, step) for name, step in STEPS.items() if step.dvc}))
"""


@pytest.mark.slow
def test_a_library_upgrade_makes_dvc_and_the_prefect_key_name_the_same_steps(copy: Path, tmp_path: Path) -> None:
    """`pip install -U torch`, faked by a newer torch's metadata first on the path: the steps whose code imports
    torch get a new Prefect cache key, and exactly those are stale to DVC once its `code` stage has run."""
    import json

    dvc, detops = str(BIN / "dvc"), str(BIN / "detops")
    if not (copy / "dvc.lock").is_file():
        sh(dvc, "repro", cwd=copy)
    dist = tmp_path / "fake" / "torch-99.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 99.0\n", encoding="utf-8")
    (dist / "top_level.txt").write_text("torch\n", encoding="utf-8")
    upgraded = {"PYTHONPATH": str(dist.parent)}
    before = json.loads(sh(sys.executable, "-c", KEYS, cwd=copy).splitlines()[-1])
    after = json.loads(sh(sys.executable, "-c", KEYS, cwd=copy, **upgraded).splitlines()[-1])
    new_keys = [name for name in before if before[name] != after[name]]
    try:
        sh(detops, "code-fingerprint", cwd=copy, **upgraded)
        status = sh(dvc, "status", cwd=copy)
    finally:
        sh(detops, "code-fingerprint", cwd=copy)
    assert "train" in new_keys and "import" not in new_keys, new_keys
    assert sorted(stale(status)) == sorted(new_keys), status
    assert stale(sh(dvc, "status", cwd=copy)) == []  # torch "downgraded" again: nothing is stale


@pytest.mark.slow
def test_a_flow_run_leaves_dvc_status_clean(tmp_path: Path) -> None:
    """The Prefect flow on the workspace's own params.yaml commits each stage to dvc.lock (DVC's API), so
    `dvc status` is clean and a following `dvc repro` runs nothing."""
    from prefect.testing.utilities import prefect_test_harness

    from detops.config import load_params
    from detops.tracking import mlflow_client, read_run_id
    from detops.workspace import Workspace
    from flows.retrain import retrain

    dvc = str(BIN / "dvc")
    copy = make_copy(tmp_path / "detops")
    empty_lock = "schema: '2.0'\nstages: {}\n"  # committed, as a clone's dvc.lock is: this run rewrites it
    (copy / "dvc.lock").write_text(empty_lock, encoding="utf-8")
    sh("git", "add", "dvc.lock", cwd=copy)
    sh("git", "commit", "-qm", "dvc.lock", cwd=copy)
    with prefect_test_harness(server_startup_timeout=120):
        state = retrain(workspace=str(copy), params={"train": {"seed": 3}}, return_state=True)
        assert state.is_completed()
        assert (copy / "dvc.lock").read_text() == empty_lock  # a run with UI overrides leaves dvc.lock alone
        state = retrain(workspace=str(copy), return_state=True)
    assert state.is_completed(), state.message
    assert stale(sh(dvc, "status", cwd=copy)) == []
    assert stages_run(sh(dvc, "repro", cwd=copy)) == []
    # the tree is dirty now (this run's dvc.lock), but it was clean when the run started, before train logged it
    assert "dvc.lock" in sh("git", "status", "--porcelain", "--untracked-files=no", cwd=copy)
    ws = Workspace.at(copy, load_params(copy / "params.yaml"))
    tags = mlflow_client(ws).get_run(str(read_run_id(ws))).data.tags
    assert tags["git.dirty"] == "false" and "git.dirty_files" not in tags
    assert tags["git.commit"] == sh("git", "rev-parse", "HEAD", cwd=copy).strip()


@pytest.mark.slow
def test_push_drop_the_cache_pull_and_status_is_clean(copy: Path) -> None:
    dvc = str(BIN / "dvc")
    if not (copy / "dvc.lock").is_file():
        sh(dvc, "repro", cwd=copy)
    sh(dvc, "checkout", "-f", cwd=copy)
    sh(dvc, "push", cwd=copy)
    shutil.rmtree(copy / ".dvc" / "cache")
    for out in ("models/best.ckpt", "data/prepared/train.json"):
        (copy / out).unlink()
    sh(dvc, "pull", cwd=copy)
    assert (copy / "models/best.ckpt").is_file()
    status = sh(dvc, "status", cwd=copy)
    assert stale(status) == [], status
