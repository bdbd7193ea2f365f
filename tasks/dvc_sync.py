"""Keep DVC in step with a Prefect run, so a following `dvc repro` runs nothing and `dvc push` has the data.

Only when the run used the workspace's own params.yaml: a run with UI overrides computed outputs that
params.yaml does not describe, so `dvc.lock` is left alone (its lineage lives in MLflow) and the run says so.

With a DVC remote, a run needs no disk that outlives it (a pod): each stage it commits is saved in DVC's run cache
(its deps, params and code -> its outputs, `cache: false` reports included), and the push sends the run cache and
every object it names. A run in an empty checkout then restores each stage whose inputs match an entry there instead
of running it, as `dvc repro --pull` would; a stage with a `persist` output (split) is not kept there by DVC, so it
runs again (quick, and the same inputs give the same split).
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


def remote(ws: Workspace) -> str | None:
    """The default DVC remote's name, or None."""
    with dvc_repo_at(ws) as repo:
        name = repo.config.get("core", {}).get("remote")
    return str(name) if name else None


def pull_run_cache(ws: Workspace) -> None:
    """The remote's run cache entries (small files naming each stage run's outputs) into the local cache."""
    with dvc_repo_at(ws) as repo:
        repo.stage_cache.pull(None)


def restore_stage(ws: Workspace, verb: str) -> bool:
    """The stage's outputs from the run cache (objects pulled from the remote) when an entry matches its deps,
    params and code now; False when none does."""
    from dvc.stage.cache import RunCacheNotFoundError

    with dvc_repo_at(ws) as repo, repo.lock:
        (stage,) = repo.stage.collect(verb)
        try:
            repo.stage_cache.restore(stage, pull=True)
        except RunCacheNotFoundError:
            return False
    return True


def push(ws: Workspace) -> str:
    """Push the tracked data and outputs, the run cache and the objects its entries name (`dvc push --run-cache`
    leaves out those of `cache: false` outputs) to the default remote, when one is configured."""
    with dvc_repo_at(ws) as repo:
        name = repo.config.get("core", {}).get("remote")
        if not name:
            return "no DVC remote configured: nothing pushed (dvc remote add -d NAME URL)"
        pushed = repo.push()
        entries = repo.stage_cache.push(None)
        for odb, objs in repo.stage_cache.get_used_objs(entries).items():
            repo.cloud.push(objs, odb=odb)
    return f"dvc push to {name!r}: {pushed} file(s) uploaded, and {len(entries)} run cache entries"


def add(ws: Workspace, path: Path) -> None:
    """`dvc add` an accepted batch folder: DVC versions it and `dvc push` sends it to the remote."""
    with dvc_repo_at(ws) as repo:
        repo.add(str(path))


def push_lock_branch(ws: Workspace, prefix: str, name: str) -> str:
    """Commit this run's dvc.lock onto the commit the run started at, as branch `<prefix>/<name>`, and push it to the
    checkout's origin (the CML way): the branch the run started from, and the working tree, are left as they are."""
    import subprocess
    import tempfile

    def git(*args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(["git", *args], cwd=ws.root, capture_output=True, text=True,
                              env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    branch = f"{prefix}/{name}"
    if not git("status", "--porcelain", "--", "dvc.lock"):
        return "dvc.lock unchanged since the commit this run started at: no branch pushed"
    author = {} if subprocess.run(["git", "config", "user.email"], cwd=ws.root, capture_output=True).returncode == 0 \
        else {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
              for what, value in (("NAME", "detops"), ("EMAIL", "detops@localhost"))}
    with tempfile.TemporaryDirectory() as tmp:  # an index of its own: the user's staged changes stay staged
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", "HEAD", env=index)
        git("add", "dvc.lock", env=index)
        tree = git("write-tree", env=index)
    commit = git("commit-tree", tree, "-p", "HEAD", "-m", f"detops: dvc.lock of run {name}", env=author)
    git("push", "origin", f"{commit}:refs/heads/{branch}")
    return f"dvc.lock committed to branch {branch} ({commit[:8]}) and pushed to origin"
