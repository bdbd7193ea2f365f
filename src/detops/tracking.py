"""MLflow wiring shared by train and evaluate: where runs go and what each run records about its origin.

Default store: a SQLite file and an artifact folder in the workspace (no server). MLFLOW_TRACKING_URI or
`mlflow.tracking_uri` points at a team's server instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.workspace import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRACKED_PACKAGES = ("detops", "torch", "torchvision", "pytorch-lightning", "timm", "albumentations",
                    "torchmetrics", "pycocotools", "mlflow", "prefect", "great-expectations", "onnx")


def tracking_uri(ws: Workspace) -> str:
    """params > environment > local SQLite store in the workspace."""
    if ws.params.mlflow.tracking_uri:
        return ws.params.mlflow.tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ws.root / 'mlflow.db'}"


def artifact_location(ws: Workspace) -> str:
    return (ws.root / "mlartifacts").as_uri()


def bound_http_requests(ws: Workspace) -> None:
    """Bound every request to a tracking server (MLflow's defaults wait minutes on one that is down).

    MLflow reads these variables at each request, so setting them before the first client call is enough; the
    params are the source of truth, so they overwrite values left by an earlier workspace in the same process.
    """
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(ws.params.mlflow.http_timeout)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(ws.params.mlflow.http_max_retries)


def mlflow_client(ws: Workspace) -> MlflowClient:
    """The one way detops builds an MLflow client: on the workspace's store (tracking and registry), its requests
    to a server bounded by `mlflow.http_timeout` and `mlflow.http_max_retries`.

    MLflow takes no bounds per client: it reads them from the environment at each request. So the factory sets
    them from the params every time it returns a client, and a client is bounded whatever ran before it in the
    process (nothing at all, or another workspace with other bounds).
    """
    import mlflow

    bound_http_requests(ws)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # steps print their own summary
    uri = tracking_uri(ws)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def configure(ws: Workspace) -> str:
    """Point MLflow at the workspace store and make sure the experiment exists; returns its id."""
    import mlflow

    bound_http_requests(ws)

    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; left there, this workspace's store would
    # override the next workspace's default in the same process (a flow run after another, tests).
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(ws))
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    name = ws.params.mlflow.experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mlflow.set_experiment(name)
        return str(experiment.experiment_id)
    local = tracking_uri(ws).startswith("sqlite:")
    exp_id = mlflow.create_experiment(name, artifact_location=artifact_location(ws) if local else None)
    mlflow.set_experiment(name)
    return str(exp_id)


CODE_SOURCE_ENV = "DETOPS_CODE_SOURCE"  # set by a deployment's job (flows.deploy.kubernetes)
GIT_STATE_ENV = "DETOPS_GIT_STATE"  # the git state a flow run took at its start (json), for its steps
MAX_DIRTY_SHOWN = 50  # modified files named in `git.dirty_files`; more are counted


def git_commit(root: Path) -> dict[str, str]:
    """Commit, dirty flag and the modified tracked files of the workspace's repository ('unknown' outside git)."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD").strip() or "unknown"
    dirty = git("status", "--porcelain", "-z", "--untracked-files=no", "--no-renames").split("\0")
    names = sorted(entry[3:] for entry in dirty if entry)  # "XY path" each
    shown = ", ".join(names[:MAX_DIRTY_SHOWN]) + (
        f", ... and {len(names) - MAX_DIRTY_SHOWN} more" if len(names) > MAX_DIRTY_SHOWN else "")
    named = {"git.dirty_files": shown} if names else {}
    return {"git.commit": commit, "git.dirty": str(bool(names)).lower(), **named}


def git_state(root: Path) -> dict[str, str]:
    """The git state a run records: the one its flow took at the start (the run's own dvc.lock and .gitignore
    updates come later and are not the user's edits), else the repository's now."""
    taken = os.environ.get(GIT_STATE_ENV)
    if taken:
        state = json.loads(taken)
        if Path(state.pop("root")) == root.resolve():
            return {str(k): str(v) for k, v in state.items()}
    return git_commit(root)


@contextmanager
def git_state_at_start(root: Path) -> Iterator[dict[str, str]]:
    """Take the repository's git state now and have every step of this run (and the processes it starts) record
    that one."""
    state = git_commit(root)
    before = os.environ.get(GIT_STATE_ENV)
    os.environ[GIT_STATE_ENV] = json.dumps({"root": str(root.resolve()), **state})
    try:
        yield state
    finally:
        if before is None:
            os.environ.pop(GIT_STATE_ENV, None)
        else:
            os.environ[GIT_STATE_ENV] = before


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def data_versions(ws: Workspace, step: str) -> dict[str, str]:
    """Content hashes of the data files `step` declares as deps (`detops.steps.graph`): each split's, and the
    dataset's (its `info`, which import writes and validate and split carry along). Only declared files: another
    step's output that `step` does not declare is not its input, and reading it would be a side channel."""
    from detops.dataset.canonical import annotation_hash, read_dataset
    from detops.steps.graph import STEPS

    declared = {ws.fill(dep) for dep in STEPS[step].deps}
    splits = {f"data.{split}_hash": ws.split_json(split) for split in ("train", "val", "test")}
    out: dict[str, str] = {}
    for key, path in [("", ws.dataset_json), ("", ws.validated_json), *splits.items()]:
        if path not in declared or not path.is_file():
            continue
        dataset = read_dataset(path)
        if key:
            out[key] = annotation_hash(dataset)
        info = dataset.get("info", {})
        if "data.content_hash" not in out and "content_hash" in info:
            out["data.content_hash"] = str(info["content_hash"])
            out["data.root"] = str(info.get("root", ""))
            if info.get("batches"):  # lineage: the accepted batches (labelled from production) this data holds
                out["data.batches"] = ",".join(info["batches"])
    return out


def provenance(ws: Workspace, step: str) -> dict[str, str]:
    """Everything needed to reproduce a run of `step`: code commit (and where the code came from, when a deployment
    says), package versions, the versions of its data."""
    return {**git_state(ws.root), **code_source(), **package_versions(), **data_versions(ws, step)}


def code_source() -> dict[str, str]:
    """`code.source`, where a deployment's job says how the code the run executes got there (a Kubernetes run:
    `git_clone <repository>@<commit>`, installed over the image's detops); nothing elsewhere."""
    source = os.environ.get(CODE_SOURCE_ENV, "").strip()
    return {"code.source": source} if source else {}


def run_record(ws: Workspace) -> Path:
    """train's declared output `mlflow_run`: its MLflow run id, which evaluate, export and promote declare as a
    dep (so a new training run re-runs them) and read."""
    return ws.output("train", "mlflow_run")


def read_run_id(ws: Workspace) -> str | None:
    path = run_record(ws)
    if not path.is_file():
        return None
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload.get("run_id")


def run_url(ws: Workspace, run_id: str) -> str:
    """Where to look at a run: the server's UI, or `mlflow ui` on the local store."""
    uri = tracking_uri(ws)
    try:
        experiment_id = mlflow_client(ws).get_run(run_id).info.experiment_id
    except Exception:  # a link is a convenience, never a failure
        return f"run {run_id} in {uri}"
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path} (after `mlflow ui --backend-store-uri {uri}`)"


def file_md5(path: Path) -> str:
    """md5 of a file's bytes: the hash `dvc.lock` records for it, so MLflow and DVC name data alike."""
    from detops.filehash import file_digest

    return file_digest(path, "md5")


def dvc_remote(root: Path) -> str | None:
    """The default DVC remote's URL, where the data of this run can be pulled from (None if none)."""
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            name = repo.config.get("core", {}).get("remote")
            return str(repo.config["remote"][name]["url"]) if name else None
    except Exception:  # not a DVC repository, or no remote: lineage then stops at the file hashes
        return None


def log_data_inputs(ws: Workspace, run_id: str) -> None:
    """The split files a run trained, validated and tested on, as MLflow dataset inputs (the run page lists
    them under Datasets): digest = the files' md5 as dvc.lock has it, source = the file, context = split."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for split in ("train", "val", "test"):
        path = ws.split_json(split)
        if not path.is_file():
            continue
        with warnings.catch_warnings():  # mlflow registers two local-artifact sources and warns it picked one
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(path.as_uri())
        dataset = MetaDataset(source, name=f"{split} ({ws.relative(path)})",
                              digest=file_md5(path))  # type: ignore[abstract]  # mlflow's stub, not its class
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", split)]))
    client = mlflow_client(ws)
    client.log_inputs(run_id, datasets=inputs)
    remote = dvc_remote(ws.root)
    client.set_tag(run_id, "data.dvc_remote", remote or "none (dvc remote add -d NAME URL)")
