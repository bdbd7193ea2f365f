"""`detops status` on a workspace after a training run (trained, evaluated, exported, promoted in a local SQLite
store): the registry's aliases with their test and production mAP, each landing batch's state (arriving, landed,
checked with its verdict, failed with the reason, accepted, pushed) as the steps leave them, and the servers that do
not answer said as such. The command runs in a process of its own, as a user runs it, and must not import mlflow,
torch or prefect. The real servers are `slow`: a push to Label Studio (it starts in minutes), Prefect's test server
with deployments and runs, a `detops serve` replica, and `mlflow server` on the workspace's own store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_train import TINY, make_workspace

from detops.config import load_params
from detops.dataset.canonical import read_dataset, write_dataset
from detops.workspace import Workspace

CLOSED = "http://127.0.0.1:9"  # nothing listens on the discard port: a refused connection at once
OVERRIDES = (*TINY, "train.epochs=2", "export.fp16=false", "export.int8=false", "export.tensorrt=false",
             "export.openvino=false", "export.latency_runs=3", "export.warmup_runs=0", "export.batch_sizes=[1]",
             "monitor.min_batch_size=5", "monitor.screenshot=false", "label_studio.document_root=..",
             f"label_studio.url={CLOSED}")
# Run the CLI as a user does, then say which heavy libraries the process imported.
PROBE = """
import json, sys
from detops.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    sys.stderr.write("HEAVY=" + json.dumps(sorted(m for m in ("mlflow", "torch", "prefect") if m in sys.modules)))
"""


def status(root: Path, *args: str, env: dict[str, str] | None = None, sets: tuple[str, ...] = ()
           ) -> tuple[dict[str, Any], list[str]]:
    """(`detops status --json`'s answer, the heavy libraries its process imported)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "LABEL_STUDIO_API_KEY")}
    flags = [arg for item in (*OVERRIDES, *sets) for arg in ("--set", item)]
    done = subprocess.run([sys.executable, "-c", PROBE, "-w", str(root), *flags, "status", "--json", *args],
                          capture_output=True, text=True, env={**clean, **(env or {})}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), json.loads(done.stderr.rsplit("HEAVY=", 1)[1])


def state_of(answer: dict[str, Any], batch: str) -> dict[str, Any]:
    return next(b for b in answer["batches"] if b["batch"] == batch)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Train, evaluate, export and promote a tiny model once (what a flow run leaves), its dataset imported."""
    from detops.steps import evaluate, export, promote, train

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("status") / "ws"
    workspace = make_workspace(root, *OVERRIDES[len(TINY):])
    whole = {**read_dataset(workspace.split_json("train"))}
    for split in ("val", "test"):
        part = read_dataset(workspace.split_json(split))
        whole["images"] += part["images"]
        whole["annotations"] += part["annotations"]
    write_dataset(workspace.output("import", "dataset"), whole)
    for step in (train, evaluate, export, promote):
        step.run(workspace)
    import mlflow

    # promote points MLflow's global URI at this store: leave no later test on it (None: MLflow's default)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mp.undo()
    return workspace


def landed(ws: Workspace, name: str, split: str = "test", manifest: bool = True,
           change: Any = None) -> Path:
    """A labelled COCO batch under monitor.landing: the images of `split` (changed by `change`) and its labels."""
    from PIL import Image

    dataset = read_dataset(ws.split_json(split))
    target = ws.resolve(ws.params.monitor.landing) / name
    for image in dataset["images"]:
        (target / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        source = ws.resolve("data/raw/tiny") / image["file_name"]
        if change is None:
            shutil.copy(source, target / image["file_name"])
        else:
            with Image.open(source) as img:
                change(img.convert("RGB")).save(target / image["file_name"])
    (target / "annotations.json").write_text(json.dumps(dataset))
    if manifest:
        (target / ws.params.monitor.manifest).write_text("")
    return target


def test_after_a_run_the_registry_without_mlflow(ws: Workspace) -> None:
    decision = json.loads(ws.output("promote", "decision").read_text())
    metrics = json.loads(ws.output("evaluate", "metrics").read_text())
    answer, heavy = status(ws.root)
    assert heavy == []  # the SQLite store is read with sqlite3, not MLflow
    models = {m["alias"]: m for m in answer["models"]}
    assert models["champion"]["version"] == str(decision["version"])
    assert models["champion"]["test"] == pytest.approx(metrics["test/map"])
    assert models["champion"]["production"] is None
    assert models["previous-champion"]["version"] is None and models["challenger"]["version"] is None
    assert answer["batches"] == [] and "not set" in answer["prefect"]


def test_previous_champion_and_a_production_score(ws: Workspace) -> None:
    from detops.registry.client import connect

    version = str(json.loads(ws.output("promote", "decision").read_text())["version"])
    connect(ws).set_registered_model_alias(ws.params.mlflow.registered_model, "previous-champion", version)
    production = ws.resolve("reports/production")
    production.mkdir(parents=True, exist_ok=True)
    for batch, scored_at, value in (("day-2", 2.0, 0.25), ("day-1", 1.0, 0.5)):  # as monitoring.production writes
        (production / f"{batch}.json").write_text(json.dumps({
            "batch": batch, "version": version, "map": value, "scored_at": scored_at,
            "models": [{"alias": "champion", "version": version, "batch": batch, "map": value}]}))
    try:
        answer, _ = status(ws.root)
    finally:
        connect(ws).delete_registered_model_alias(ws.params.mlflow.registered_model, "previous-champion")
        shutil.rmtree(production)
    models = {m["alias"]: m for m in answer["models"]}
    assert models["previous-champion"]["version"] == version
    assert models["champion"]["production"] == 0.25 and models["champion"]["production_batch"] == "day-2"


def test_arriving_and_landed_batches(ws: Workspace) -> None:
    landed(ws, "half-copied", manifest=False)
    landed(ws, "new-day")
    answer, _ = status(ws.root)
    assert state_of(answer, "half-copied")["state"] == "arriving"
    assert state_of(answer, "new-day")["state"] == "landed"


def test_a_drifted_batch_is_checked_with_its_verdict(ws: Workspace) -> None:
    from PIL import ImageOps

    from detops.steps import monitor

    landed(ws, "bright-day", split="train", change=ImageOps.invert)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        monitor.run(ws, batch="bright-day")
    verdict = json.loads((ws.resolve(ws.params.monitor.landing) / "ledger.json").read_text())["batches"][
        "bright-day"]["verdict"]
    assert verdict == "drift"
    answer, heavy = status(ws.root)
    assert heavy == []
    row = state_of(answer, "bright-day")
    assert (row["state"], row["detail"], row["images"]) == ("checked", "drift", 8)


def test_a_refused_batch_is_failed_with_the_reason(ws: Workspace) -> None:
    from detops.errors import DataError
    from detops.monitoring.accept import take_batch
    from detops.monitoring.batches import ledger

    target = landed(ws, "wrong-classes")
    coco = json.loads((target / "annotations.json").read_text())
    coco["categories"] = [{**c, "name": f"{c['name']}-x"} for c in coco["categories"]]
    (target / "annotations.json").write_text(json.dumps(coco))
    ledger(ws).record("wrong-classes", {"verdict": "no drift", "labelled": True})  # as monitor records a check
    with pytest.raises(DataError) as refused:
        take_batch(ws, "wrong-classes")
    answer, _ = status(ws.root)
    row = state_of(answer, "wrong-classes")
    assert row["state"] == "failed" and row["detail"] == str(refused.value)


def test_an_accepted_batch(ws: Workspace) -> None:
    from detops.monitoring.accept import take_batch
    from detops.monitoring.batches import ledger

    landed(ws, "good-day")
    ledger(ws).record("good-day", {"verdict": "no drift", "labelled": True})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        outcome = take_batch(ws, "good-day")
    assert outcome.accepted is not None
    answer, _ = status(ws.root)
    assert state_of(answer, "good-day")["state"] == "accepted"


def test_servers_that_do_not_answer_are_said(ws: Workspace) -> None:
    from detops.labeling.state import RoundTrip, save_state

    target = landed(ws, "to-label")
    (target / "annotations.json").unlink()
    save_state(ws, RoundTrip("to-label", 7, {"images/000.png": 1}))
    answer, heavy = status(ws.root, "--serve", CLOSED, "--timeout", "1",
                           env={"PREFECT_API_URL": f"{CLOSED}/api", "LABEL_STUDIO_API_KEY": "0" * 40})
    assert heavy == []
    row = state_of(answer, "to-label")
    assert (row["state"], row["project"], row["tasks"]) == ("pushed", 7, 1) and "done" not in row
    assert answer["label_studio"].startswith("unreachable") and CLOSED in answer["label_studio"]
    assert answer["prefect"].startswith("unreachable") and answer["deployments"] == []
    assert answer["replicas"] == [{"url": CLOSED, "status": "unreachable", "version": None, "alias": None,
                                   "detail": answer["replicas"][0]["detail"]}]
    without_token, _ = status(ws.root)
    assert "LABEL_STUDIO_API_KEY is not set" in without_token["label_studio"]


def test_the_screen_renders(ws: Workspace) -> None:
    from typer.testing import CliRunner

    from detops.cli import app

    version = str(json.loads(ws.output("promote", "decision").read_text())["version"])
    flags = [arg for item in OVERRIDES for arg in ("--set", item)]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("PREFECT_API_URL", raising=False)
        result = CliRunner().invoke(app, ["-w", str(ws.root), *flags, "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "│ champion " in x)
    assert f"│ {version} " in line and "test/map" in line


@pytest.mark.slow
def test_a_push_to_a_real_label_studio(ws: Workspace, tmp_path: Path) -> None:
    """Tasks done / pending of a pushed batch, from the project itself: one of its three tasks labelled."""
    from _label_studio_server import running
    from _labeller import submit

    from detops.labeling.push import push
    from detops.labeling.studio import LabelStudio

    target = landed(ws, "ward-1", split="val")
    (target / "annotations.json").unlink()
    with running(tmp_path / "label-studio", ws.root.parent) as server:
        here = Workspace.at(ws.root, load_params(ws.root / "params.yaml", [*OVERRIDES,
                                                                          f"label_studio.url={server.url}"]))
        with LabelStudio(server.url, server.token) as studio:
            pushed = push(here, "ward-1", studio, None)
        assert pushed.imported == 3
        task = sorted(json.loads((ws.resolve("reports/labeling/label_studio/ward-1/label_studio.json")).read_text())[
            "tasks"].values())[0]
        submit(server, task, [])
        answer, heavy = status(ws.root, env={"LABEL_STUDIO_API_KEY": server.token},
                               sets=(f"label_studio.url={server.url}",))
    assert heavy == []
    row = state_of(answer, "ward-1")
    assert (row["state"], row["project"], row["done"], row["pending"]) == ("pushed", pushed.project, 1, 2)
    assert answer["label_studio"] == f"asked {server.url}"


@pytest.mark.slow
def test_the_last_run_of_each_deployment(ws: Workspace) -> None:
    """Prefect's test server with two deployments of one flow: the last run of one (failed after a completed one,
    a scheduled one after both), none of the other."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Completed, Failed, Scheduled
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), get_client(sync_client=True) as client:
        flow = client.create_flow_from_name("retrain")
        drift = client.create_deployment(flow, "retrain-on-drift")
        client.create_deployment(flow, "retrain-on-demand")
        for name, state in (("first", Completed()), ("second", Failed(message="bad data")), ("next", Scheduled())):
            client.create_flow_run_from_deployment(drift, name=name, state=state)
        answer, heavy = status(ws.root, env={"PREFECT_API_URL": str(PREFECT_API_URL.value())})
    assert heavy == []
    assert [(r["deployment"], r["run"], r["state"]) for r in answer["deployments"]] == [
        ("retrain/retrain-on-demand", None, None), ("retrain/retrain-on-drift", "second", "Failed")]


@pytest.mark.slow
def test_the_version_a_replica_serves(ws: Workspace, tmp_path: Path) -> None:
    """A real `detops serve` of the champion: its /health names the version, as the registry does."""
    from _serve_server import ServeProcess

    with ServeProcess(ws.root, *OVERRIDES, log_dir=tmp_path) as server:
        server.wait_ready()
        answer, _ = status(ws.root, "--serve", server.url)
    champion = next(m for m in answer["models"] if m["alias"] == "champion")
    replica = answer["replicas"][0]
    assert (replica["status"], replica["version"], replica["alias"]) == ("ready", champion["version"], "champion")


@pytest.mark.slow
def test_the_registry_of_a_tracking_server(ws: Workspace, tmp_path: Path) -> None:
    """`mlflow server` on the workspace's own store: its REST API gives the aliases the file gives, without mlflow
    in the status process; a server that does not answer is said."""
    import time

    import httpx
    from _mlflow_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "mlflow.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{ws.root / 'mlflow.db'}",
             "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        from_file, _ = status(ws.root)
        from_server, heavy = status(ws.root, env={"MLFLOW_TRACKING_URI": url})
    finally:
        os.killpg(server.pid, 9)
        server.wait(10)
    assert heavy == [] and from_server["registry"].endswith(f"at {url}")
    assert from_server["models"] == from_file["models"] and from_file["models"][0]["version"] is not None
    down, _ = status(ws.root, env={"MLFLOW_TRACKING_URI": url}, sets=())
    assert down["models"] == [] and down["registry"].startswith(f"the tracking server at {url} does not answer")
