"""Stateless runs: what restoring from the DVC remote saves. The retraining flow runs in a fresh clone of a small
copy of this repository (its pipeline files, sample params shrunk by the options), with a DVC remote and an MLflow
store outside every clone; each clone is deleted after its run. Run 1 computes everything; run 2, in another
fresh clone at the same commit, restores every stage the remote holds.

Run: python benchmarks/stateless.py [--remote DIR_OR_URL] [--epochs 2] [--images 48]
An s3:// remote needs the s3 extra and the usual AWS_* variables. Prints a table: wall time per run, and how many
steps ended Completed (ran) or Restored.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def origin_repo(root: Path, remote: str, store: Path, epochs: int, images: int) -> Path:
    """This repository's pipeline files in a new git repository with one commit, DVC initialised with `remote`."""
    for name in git("ls-files", "dvc.yaml", "params.yaml", "src", ".dvcignore", "data", cwd=REPO).split():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["sample"]["num_images"] = images
    params["train"]["epochs"] = epochs
    params["mlflow"]["tracking_uri"] = f"sqlite:///{store}"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n", encoding="utf-8")
    (root / ".gitignore").write_text("/.detops/\n/.cache/\n")
    git("init", "-q", cwd=root)
    for key, value in (("user.email", "bench@detops.invalid"), ("user.name", "bench")):
        git("config", key, value, cwd=root)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "remote", "add", "-d", "shared", remote], cwd=root, check=True)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "benchmark copy", cwd=root)
    return root


def run_in_fresh_clone(origin: Path, checkout: Path) -> tuple[float, dict[str, int]]:
    """Seconds the flow took in a fresh clone (deleted after), and how many tasks ended in each state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import retrain

    git("clone", "-q", str(origin), str(checkout), cwd=origin.parent)
    started = time.perf_counter()
    state = retrain(workspace=str(checkout), return_state=True)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise SystemExit(f"the run in {checkout} ended {state.name}: {state.message}")
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    counts: dict[str, int] = {}
    for run in runs:
        if run.state is not None:
            counts[run.state.name] = counts.get(run.state.name, 0) + 1
    shutil.rmtree(checkout)
    return seconds, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--remote", default="", help="DVC remote (a folder or a URL); default: a temp folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=48)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    with tempfile.TemporaryDirectory(prefix="detops-stateless-") as tmp:
        root = Path(tmp)
        remote = args.remote or str(root / "remote")
        origin = origin_repo(root / "origin", remote, root / "mlflow.db", args.epochs, args.images)
        rows = [(name, *run_in_fresh_clone(origin, root / name)) for name in ("compute", "restore")]
    print(f"\ncpu: {os.cpu_count()} cores, flags {' '.join(f for f in flags if f.startswith(('avx', 'amx', 'fma')))}; "
          f"sample {args.images} images, {args.epochs} epochs; remote {args.remote or 'a local folder'}")
    print(f"{'run':<10}{'seconds':>9}{'ran':>6}{'restored':>10}{'vs compute':>12}")
    for name, seconds, counts in rows:
        print(f"{name:<10}{seconds:>9.1f}{counts.get('Completed', 0):>6}{counts.get('Restored', 0):>10}"
              f"{seconds / rows[0][1]:>12.2f}")


if __name__ == "__main__":
    main()
