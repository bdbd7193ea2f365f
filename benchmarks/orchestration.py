"""Benchmark: the demo as `make demo` runs it, in a fresh copy of the repository (git + DVC), twice; then a
no-op `dvc repro`.

Prints per step its own time (Prefect task run time) and the run's wall time; orchestration overhead =
flow wall time minus the steps' own time, as a share of the wall time (target < 5 %); the second run's
states (every step but promote served from cache); `dvc status` after the run (clean: the flow kept
dvc.lock in step) and the wall time of a no-op `dvc repro` (target < 2 s).

    .venv/bin/python benchmarks/orchestration.py [--workspace /tmp/detops-bench/orchestration] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


def fresh_copy(root: Path) -> None:
    """The tracked files of the repository in a new git repository with DVC, as a clone would be."""
    if root.exists():
        shutil.rmtree(root)
    for name in sh("git", "ls-files", cwd=REPO).split():
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, root / name)
    sh("git", "init", "-q", cwd=root)
    sh("git", "-c", "user.email=b@detops.invalid", "-c", "user.name=bench", "commit", "-qm", "copy",
       "--allow-empty", cwd=root)
    sh(str(BIN / "dvc"), "remote", "modify", "local", "url", str(root.parent / "dvc-remote"), cwd=root)


def flow_run(root: Path, overrides: list[str]) -> tuple[float, float, dict[str, tuple[str, float]]]:
    """Wall time of the call (the first also starts Prefect's temporary server), the flow run's own time, and
    per task its final state and own run time."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.retrain import retrain

    started = time.perf_counter()
    state = retrain(workspace=str(root), overrides=overrides, return_state=True)
    wall = time.perf_counter() - started
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
        flow_time = client.read_flow_run(state.state_details.flow_run_id).total_run_time.total_seconds()
    return wall, flow_time, {r.name: (r.state.name if r.state else "?", r.total_run_time.total_seconds())
                             for r in runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/detops-bench/orchestration/detops"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params override")
    args = parser.parse_args()
    root = args.workspace.resolve()
    fresh_copy(root)
    rows: list[tuple[str, float, float, dict[str, tuple[str, float]]]] = []
    for label in ("first run", "second run"):
        wall, flow_time, tasks = flow_run(root, args.overrides)
        rows.append((label, wall, flow_time, tasks))
    print("\n| run | call wall s | flow run s | steps' own s | overhead (of the flow run) | states |")
    print("|---|---|---|---|---|---|")
    for label, wall, flow_time, tasks in rows:
        own = sum(seconds for _, seconds in tasks.values())
        states: dict[str, Any] = {}
        for name, (state, _) in tasks.items():
            states.setdefault(state, []).append(name)
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in states.items())
        share = (flow_time - own) / flow_time * 100 if flow_time else 0.0
        print(f"| {label} | {wall:.1f} | {flow_time:.1f} | {own:.1f} | {share:.1f} % | {shown} |")
    print("\n| step (first run) | own s |\n|---|---|")
    for name, (_, seconds) in rows[0][3].items():
        print(f"| {name} | {seconds:.1f} |")
    status = sh(str(BIN / "dvc"), "status", cwd=root).strip()
    started = time.perf_counter()
    repro = sh(str(BIN / "dvc"), "repro", cwd=root)
    noop = time.perf_counter() - started
    ran = [line for line in repro.splitlines() if line.startswith("Running stage")]
    print(f"\n`dvc status` after the flow: {status.splitlines()[-1] if status else '(empty)'}")
    print(f"no-op `dvc repro`: {noop:.2f} s, stages run: {ran or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
