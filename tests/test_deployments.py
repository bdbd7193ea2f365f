"""Deployments against a real Prefect server on loopback and a real process worker: `detops deploy` for a tiny
workspace, runs triggered through the API as the UI triggers them, one run at a time, notifications posted to a
webhook; and the committed prefect.yaml, which must equal the one generated from params.yaml.

The server and the worker are subprocesses with their own PREFECT_HOME, shared by the session (a start costs ~10 s).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from _waiting import tail, wait_until
from typer.testing import CliRunner

from detops.cli import app
from detops.config import apply_override, load_params
from detops.tracking import CODE_SOURCE_ENV
from flows.deploy.restart import CRASHED_MESSAGE, HEARTBEAT, RESCHEDULED_MESSAGE, RESTART, RESTART_AGAIN
from flows.deploy.spec import (
    DRIFT_CHECK,
    DRIFT_EVENT,
    HEARTBEAT_ENV,
    LABELLED_EVENT,
    LABELS_SYNC,
    RETRAIN,
    TAGS,
    WORKSPACE_PLACEHOLDER,
    job_variables,
    prefect_yaml,
)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Not the defaults: the deployments must take them from params.yaml. The drift check never comes due in a test.
CRON, DRIFT_CRON, TIMEZONE = "17 4 * * 2", "0 4 1 1 *", "Europe/Paris"
NAMES = ("retrain/retrain-scheduled", "retrain/retrain-on-demand", "drift_check/drift-check",
         "retrain/retrain-on-drift", "labels_sync/labels-sync")
TINY = [
    "sample.num_images=36", "sample.image_size=96", "sample.max_object_size=48",
    "validate.data_docs=false",
    "train.image_size=96", "train.epochs=2", "train.batch_size=8", "train.fpn_channels=16", "train.num_workers=0",
    "evaluate.num_sample_images=4",
    "export.latency_runs=3", "export.warmup_runs=0", "export.calibration_images=4",
    "promote.lock=prefect",  # the deploy command creates the global concurrency limit; the run acquires it
    "monitor.min_batch_size=10", "monitor.screenshot=false",
    f"deploy.cron={CRON}", f"deploy.drift_cron={DRIFT_CRON}", f"deploy.labels_cron={DRIFT_CRON}",
    f"deploy.timezone={TIMEZONE}",
    "deploy.work_pool=detops-test",
    # Prefect's shortest heartbeat; a run silent for two of them is dead (the test of it waits that long)
    "deploy.heartbeat_seconds=30", "deploy.dead_after_seconds=60",
]


# ---------------------------------------------------------------------------------------------- fast: no server


def test_committed_prefect_yaml_is_generated_from_params_yaml() -> None:
    """One source: deployments/prefect.yaml is what `detops deploy --prefect-yaml` writes from params.yaml."""
    committed = (REPO / "deployments/prefect.yaml").read_text(encoding="utf-8")
    assert committed == prefect_yaml(load_params(REPO / "params.yaml"))
    spec = yaml.safe_load(committed)
    assert [d["name"] for d in spec["deployments"]] == [name.split("/")[1] for name in NAMES]
    assert [d["entrypoint"] for d in spec["deployments"]] == [RETRAIN, RETRAIN, DRIFT_CHECK, RETRAIN, LABELS_SYNC]
    assert spec["deployments"][0]["schedules"] == [{"cron": "0 3 * * 1", "timezone": "UTC"}]
    assert spec["deployments"][2]["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    assert spec["deployments"][4]["schedules"] == [{"cron": "*/15 * * * *", "timezone": "UTC"}]
    triggers = spec["deployments"][3]["triggers"]
    assert [t["expect"] for t in triggers] == [[DRIFT_EVENT], [LABELLED_EVENT]]
    assert all(t["parameters"] == {"batch": "{{ event.payload.batch }}"} for t in triggers)


def test_deploy_help_and_the_errors_without_a_server(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "--help"])
    assert result.exit_code == 0 and "--prefect-yaml" in result.output
    env = _child_env(tmp_path / "home")
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(BIN / "detops"), "--params", str(REPO / "params.yaml"), "deploy"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PREFECT_API_URL is not set" in done.stderr and "Traceback" not in done.stderr
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{_free_port()}/api"  # nothing listens there
    done = subprocess.run([str(BIN / "detops"), "--params", str(REPO / "params.yaml"), "deploy"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "does not answer" in done.stderr, done.stdout + done.stderr


@pytest.mark.parametrize(("key", "value", "message"), [
    ("deploy.cron", "0 3 * *", "not a cron expression"),
    ("deploy.timezone", "Mars/Olympus", "not an IANA time zone"),
    ("deploy.webhook_url", "hooks.example.com/x", "not an http(s) URL"),
    ("deploy.heartbeat_seconds", "10", "greater than or equal to 30"),
    ("deploy.dead_after_seconds", "60", "must be longer than heartbeat_seconds"),
])
def test_deploy_params_are_checked_when_params_load(key: str, value: str, message: str) -> None:
    from detops.errors import ParamsError

    with pytest.raises(ParamsError, match=re.escape(message)):
        load_params(REPO / "params.yaml", [f"{key}={value}"])


# ------------------------------------------------------------------------------- slow: real server and worker


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """A Prefect of its own (PREFECT_HOME), no telemetry, MLflow in the workspace, quick worker polling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING"))}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", PREFECT_UI_ENABLED="false", PREFECT_WORKER_QUERY_SECONDS="1",
               PREFECT_WORKER_PREFETCH_SECONDS="1")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group we started (server and worker spawn children), SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


class Webhook:
    """A loopback HTTP endpoint that records the JSON bodies POSTed to it (what Slack would receive)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        messages = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                messages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [str(m.get("text", "")) for m in self.messages]


@pytest.fixture(scope="session")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def prefect_server(prefect_home: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port, SQLite in its PREFECT_HOME; yields the API URL."""
    port = _free_port()
    log = prefect_home / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                    str(port)], env=_child_env(prefect_home), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until(lambda: process.poll() is not None or _healthy(url), 180, "the Prefect server", log)
        assert process.poll() is None, f"prefect server exited:\n{tail(log)}"
        yield url
    finally:
        _stop(process)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def api(prefect_server: str) -> Iterator[str]:
    """This process talks to the test server too (run_deployment, reading runs, emitting events)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        yield prefect_server


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Path:
    """A workspace outside the repository: params.yaml with tiny settings, the test's cron and webhook."""
    root = tmp_path_factory.mktemp("ws")
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for item in [*TINY, f"deploy.webhook_url={webhook.url}"]:
        apply_override(raw, item)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return root


def _detops(workspace: Path, home: Path, api_url: str, *args: str) -> str:
    done = subprocess.run([str(BIN / "detops"), *args], cwd=workspace, env=_child_env(home, api_url),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="session")
def deployed(prefect_server: str, prefect_home: Path, workspace: Path) -> str:
    """`detops deploy` run in the workspace, before any worker exists (so it creates the pool)."""
    return _detops(workspace, prefect_home, prefect_server, "deploy")


@pytest.fixture(scope="session")
def worker(prefect_server: str, prefect_home: Path, deployed: str, api: str) -> Iterator[Path]:
    """`prefect worker start --pool <deploy.work_pool>`, started outside the workspace; yields its log."""
    from prefect import get_client

    log = prefect_home / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "detops-test", "--name",
                                    "detops-test-worker"], cwd=prefect_home, env=_child_env(prefect_home, api),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with get_client(sync_client=True) as client:
            wait_until(lambda: process.poll() is not None or client.read_workers_for_work_pool("detops-test"), 120,
                       "the worker to register", log)
        assert process.poll() is None, f"prefect worker exited:\n{tail(log)}"
        yield log
    finally:
        _stop(process)


@pytest.mark.slow
def test_deploy_creates_pool_lock_deployments_and_notifications(deployed: str, api: str, workspace: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.schedules import CronSchedule

    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("detops-test")
        assert (pool.type, pool.concurrency_limit) == ("process", 1)
        assert client.read_global_concurrency_limit_by_name("detops-promote-detops-detector").limit == 1
        scheduled, on_demand, drift_check, on_drift, labels_sync = (
            client.read_deployment_by_name(name) for name in NAMES)
        automations = {a.name for a in client.read_automations()}
        batch_triggers = client.read_resource_related_automations(f"prefect.deployment.{on_drift.id}")
    for deployment in (scheduled, on_demand, drift_check, on_drift, labels_sync):
        assert deployment.work_pool_name == "detops-test"
        assert deployment.parameters == {"workspace": str(workspace)}
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(workspace)}}]
        assert deployment.enforce_parameter_schema
        assert deployment.job_variables == {"env": {HEARTBEAT_ENV: "30"}}
    assert [d.entrypoint for d in (scheduled, on_demand, drift_check, on_drift, labels_sync)] == [
        RETRAIN, RETRAIN, DRIFT_CHECK, RETRAIN, LABELS_SYNC]
    assert "ParamsOverlay" in json.dumps(on_demand.parameter_openapi_schema)  # the UI's typed form
    form = on_demand.parameter_openapi_schema["properties"]["params"]
    assert isinstance(form["default"], dict) and "anyOf" not in form  # an empty overlay, not "ParamsOverlay / None"
    assert form["default"]["train"]["epochs"] is None  # its fields shown at once, each unset
    assert [s.schedule for s in scheduled.schedules] == [CronSchedule(cron=CRON, timezone=TIMEZONE)]
    assert [s.schedule for s in drift_check.schedules] == [CronSchedule(cron=DRIFT_CRON, timezone=TIMEZONE)]
    assert [s.schedule for s in labels_sync.schedules] == [CronSchedule(cron=DRIFT_CRON, timezone=TIMEZONE)]
    assert all(s.active for s in (*scheduled.schedules, *drift_check.schedules))
    assert on_demand.schedules == on_drift.schedules == []
    assert sorted(next(iter(t.trigger.expect)) for t in batch_triggers) == sorted(  # type: ignore[union-attr]
        [DRIFT_EVENT, LABELLED_EVENT])
    assert all(t.actions[0].parameters == {"batch": "{{ event.payload.batch }}"}  # type: ignore[union-attr]
               for t in batch_triggers)
    assert {"detops: run failed", "detops: promotion rejected", RESTART, RESTART_AGAIN} <= automations


@pytest.mark.slow
def test_prefect_deploy_of_the_generated_yaml_makes_the_same_deployments(
    deployed: str, api: str, prefect_home: Path, workspace: Path
) -> None:
    """`prefect deploy` on the rendered prefect.yaml and `detops deploy` agree; deploying again converges."""
    from prefect import get_client

    def read() -> list[Any]:
        with get_client(sync_client=True) as client:
            return [client.read_deployment_by_name(name) for name in NAMES]

    def shape(d: Any) -> dict[str, Any]:
        with get_client(sync_client=True) as client:
            triggers = client.read_resource_related_automations(f"prefect.deployment.{d.id}")
        return {"entrypoint": d.entrypoint, "pool": d.work_pool_name, "tags": d.tags, "schema":
                d.parameter_openapi_schema, "enforce": d.enforce_parameter_schema, "description": d.description,
                "schedules": [s.schedule for s in d.schedules], "pull": [list(step) for step in d.pull_steps or []],
                "job_variables": d.job_variables,
                "triggers": [(a.trigger.model_dump(exclude={"id"}), [x.model_dump(exclude={"deployment_id"})
                                                                    for x in a.actions]) for a in triggers]}

    by_detops = read()
    _detops(workspace, prefect_home, api, "deploy", "--prefect-yaml", "prefect.yaml")
    _run([str(BIN / "prefect"), "deploy", "--no-prompt", "--prefect-file", "prefect.yaml", "--all"], workspace,
         _child_env(prefect_home, api))
    by_prefect = read()
    assert [shape(d) for d in by_prefect] == [shape(d) for d in by_detops]
    assert all(d.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]
               == WORKSPACE_PLACEHOLDER for d in by_prefect)
    assert all(d.parameters == {"workspace": "."} for d in by_prefect)

    _detops(workspace, prefect_home, api, "deploy")
    again = read()
    assert [d.id for d in again] == [d.id for d in by_detops]
    assert [shape(d) for d in again] == [shape(d) for d in by_detops]
    assert all(d.parameters == {"workspace": str(workspace)} for d in again)
    assert [len(d.schedules) for d in again] == [1, 0, 1, 0, 1]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def _final(flow_run_id: Any, timeout: float, log: Path, passing: tuple[str, ...] = ()) -> Any:
    """The run once in a final state, other than the `passing` ones (final states an automation moves on from)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        def done() -> Any:
            run = client.read_flow_run(flow_run_id)
            return run if run.state and run.state.is_final() and run.state.name not in passing else None

        try:
            return wait_until(done, timeout, f"flow run {flow_run_id}", log)
        except AssertionError as exc:  # say where it stopped: the states it went through
            states = sorted(client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp)
            said = [(s.timestamp.isoformat(), s.name, s.message) for s in states]
            raise AssertionError(f"{exc}\nstates: {said}") from None


@pytest.mark.slow
def test_ui_runs_overlay_params_yaml_and_queue_one_at_a_time(
    worker: Path, api: str, workspace: Path, webhook: Webhook
) -> None:
    """Two runs triggered together through the API, as the UI triggers them: one trains with a form field that
    differs from params.yaml, the other fails (a dataset that is not there). The pool's single slot runs them one
    after the other; the failure, and a rejected promotion, are posted to the webhook."""
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment
    from prefect.events.worker import EventsWorker

    from detops.steps.result import StepResult
    from detops.workspace import Workspace
    from flows.events import emit_promotion_event

    trained = run_deployment("retrain/retrain-on-demand", timeout=0,
                             parameters={"workspace": str(workspace), "params": {"train": {"epochs": 1}}})
    broken = run_deployment("retrain/retrain-on-demand", timeout=0,
                            parameters={"params": {"import": {"source": "data/raw/missing"}}})
    trained, broken = _final(trained.id, 240, worker), _final(broken.id, 120, worker)  # type: ignore[union-attr]

    assert trained.state.is_completed(), f"{trained.state}\n{tail(worker, 80)}"
    assert broken.state.is_failed(), f"{broken.state}\n{tail(worker, 80)}"
    first, second = sorted((trained, broken), key=lambda run: run.start_time)
    assert first.end_time <= second.start_time, "the two runs overlapped: the work pool's limit did not hold"

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("detops").experiment_id],  # type: ignore[union-attr]
                               f"tags.`prefect.flow_run_id` = '{trained.id}'")
    assert run.data.params["train.epochs"] == "1"  # the form's field ...
    assert load_params(workspace / "params.yaml").train.epochs == 2  # ... over params.yaml, which it left alone
    assert run.data.tags["prefect.deployment"] == "retrain-on-demand"
    versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert [v.name for v in versions] == ["detops-detector"], "the promote step registered no version"

    message = wait_until(lambda: [t for t in webhook.texts() if broken.name in t], 60, "the failure notification")[0]
    assert "Failed" in message and "retrain-on-demand" in message

    # The event the flow emits after `promote` (flows.events), here for a rejection of the trained run's version,
    # with the step's outputs as the step graph declares them (as the promote step returns them).
    ws = Workspace.at(workspace, load_params(workspace / "params.yaml"))
    outputs = {name: ws.relative(path) for name, path in ws.outputs("promote").items()}
    report = json.loads(ws.resolve(outputs["decision"]).read_text())
    report["decision"].update(promote=False, reason="candidate 0.1000 is not above the champion's 0.2000 + 0.005")
    ws.resolve(outputs["decision"]).write_text(json.dumps(report))
    emit_promotion_event(ws, StepResult("promote", outputs=outputs))
    EventsWorker.drain_all()
    message = wait_until(lambda: [t for t in webhook.texts() if "not promoted" in t], 60,
                         "the rejection notification")[0]
    assert f"detops-detector version {report['version']} not promoted" in message
    assert "is not above the champion's" in message and report["model_uri"] in message


@pytest.mark.slow
def test_a_drifted_batch_starts_retrain_on_drift_with_the_batch(worker: Path, api: str, workspace: Path) -> None:
    """The event drift_check emits for a drifted batch starts `retrain-on-drift` with that batch; an unlabelled batch
    ends the run with the list of images to label."""
    import numpy as np
    from PIL import Image
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from detops.monitoring.accept import labels_needed_file
    from detops.workspace import Workspace

    ws = Workspace.at(workspace, load_params(workspace / "params.yaml"))
    batch = ws.resolve(ws.params.monitor.landing) / "night-shift"
    batch.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 60, (64, 80, 3), dtype=np.uint8)).save(batch / f"{i}.png")
    (batch / ws.params.monitor.manifest).touch()

    emit_event(DRIFT_EVENT, resource={"prefect.resource.id": "detops.batch.night-shift",
                                      "prefect.resource.name": "night-shift"},
               payload={"batch": "night-shift", "workspace": str(workspace)})
    EventsWorker.drain_all()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/retrain-on-drift")
        only_it = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        [started] = wait_until(lambda: client.read_flow_runs(deployment_filter=only_it), 60, "the drift-triggered run",
                               worker)
    run = _final(started.id, 120, worker)
    assert run.parameters["batch"] == "night-shift", run.parameters
    assert run.state.is_completed(), f"{run.state}\n{tail(worker, 80)}"
    assert len(labels_needed_file(ws, "night-shift").read_text().splitlines()) == 3
    # no retraining: the run ran no step task, and the unlabelled batch did not join the dataset
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert not {t.name.split("-")[0] for t in tasks} & {"import", "train", "promote"}, [t.name for t in tasks]
    assert not (ws.resolve(ws.params.import_.batches) / "night-shift").exists()


@pytest.mark.slow
def test_drift_check_announces_a_labelled_batch_once_and_retraining_takes_it(
    worker: Path, api: str, workspace: Path
) -> None:
    """Two ticks of the drift-check deployment over a drifted labelled batch: one event, so one retrain-on-drift
    run, which completes with the batch's images in the dataset; a batch without its manifest is never read."""
    import numpy as np
    from PIL import Image
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment

    from detops.config.sample import SampleParams
    from detops.sample.generate import generate_sample
    from detops.steps import import_, sample, split, validate
    from detops.workspace import Workspace

    ws = Workspace.at(workspace, load_params(workspace / "params.yaml"))
    if not ws.split_json("train").is_file():  # the reference: the train split (earlier tests may have made it)
        for step in (sample, import_, validate, split):
            step.run(ws)
    landing = ws.resolve(ws.params.monitor.landing)
    for name, manifest in (("dark-day", True), ("half-copied", False)):
        batch = landing / name
        generate_sample(batch, SampleParams(num_images=20, image_size=96, max_object_size=48, seed=11, workers=1))
        for image in (batch / "images").iterdir():
            with Image.open(image) as img:
                dark = (np.asarray(img.convert("RGB"), dtype=np.float32) * 0.4).astype(np.uint8)
            Image.fromarray(dark).save(image)
        if manifest:
            (batch / ws.params.monitor.manifest).touch()

    for _ in range(2):  # two scheduled ticks
        tick = run_deployment("drift_check/drift-check", parameters={"workspace": str(workspace)}, timeout=0)
        checked = _final(tick.id, 180, worker)
        assert checked.state.is_completed(), f"{checked.state}\n{tail(worker, 80)}"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/retrain-on-drift")
        only_it = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

        def for_the_batch() -> list[Any]:
            return [r for r in client.read_flow_runs(deployment_filter=only_it)
                    if r.parameters.get("batch") == "dark-day"]

        [started] = wait_until(for_the_batch, 60, "the drift-triggered run", worker)
    run = _final(started.id, 300, worker)
    assert run.state.is_completed(), f"{run.state}\n{tail(worker, 80)}"
    with get_client(sync_client=True) as client:
        assert len([r for r in client.read_flow_runs(deployment_filter=only_it)
                    if r.parameters.get("batch") == "dark-day"]) == 1  # announced once over two ticks
    dataset = json.loads(ws.dataset_json.read_text(encoding="utf-8"))
    assert "dark-day" in dataset["info"]["batches"]
    assert sum(im.get("batch") == "dark-day" for im in dataset["images"]) == 20
    ledger = json.loads((landing / "ledger.json").read_text(encoding="utf-8"))["batches"]
    assert "dark-day" in ledger and "half-copied" not in ledger


@pytest.mark.slow
def test_labels_pulled_from_label_studio_start_retrain_on_drift_and_the_new_version_names_the_batch(
    worker: Path, api: str, workspace: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The loop closed at its human end, with a real Label Studio beside the Prefect server and worker: a 60-image
    unlabelled batch is selected, pushed with pre-annotations, labelled through the API as a person would, and
    pulled with the command line; the event it emits starts `retrain-on-drift`, which accepts the batch, and the
    model version that run registers names the batch in its lineage."""
    from _label_studio_server import running
    from _labeller import label_like_a_person, truth
    from _monitoring_fixtures import SIZE, batch_from, sample, tiny_checkpoint
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from detops.labeling.pull import labelled_name
    from detops.labeling.state import load_state
    from detops.registry.client import connect
    from detops.steps import import_, split, validate
    from detops.steps import sample as sample_step
    from detops.workspace import Workspace

    batch, images, budget = "clinic-4", 60, 50
    ws = Workspace.at(workspace, load_params(workspace / "params.yaml"))
    if not ws.split_json("train").is_file():  # the dataset (its classes), as earlier tests may have made it
        for step in (sample_step, import_, validate, split):
            step.run(ws)
    delivery = sample(tmp_path_factory.mktemp("delivery"), seed=21, num_images=images)
    landing = ws.resolve(ws.params.monitor.landing)
    (batch_from(delivery, landing, batch, manifest=ws.params.monitor.manifest) / "annotations.json").unlink()
    classes = [c["name"] for c in sorted(json.loads(ws.dataset_json.read_text())["categories"], key=lambda c: c["id"])]
    tiny_checkpoint(workspace / "models/labelling.ckpt", classes)

    with running(tmp_path_factory.mktemp("label-studio-data"), workspace.parent) as server:
        overrides = [item for setting in ("label.model=models/labelling.ckpt", f"label.budget={budget}",
                                          f"label_studio.url={server.url}",
                                          f"label_studio.document_root={workspace.parent}")
                     for item in ("--set", setting)]
        env = {"LABEL_STUDIO_API_KEY": server.token, "PREFECT_API_URL": api}

        def label(*args: str) -> str:
            result = CliRunner().invoke(app, ["-w", str(workspace), *overrides, "label", *args], env=env)
            assert result.exit_code == 0, result.output
            return result.output

        label("select", batch)
        # the ranked budget, and beside it the random accuracy share drawn from the images the ranking left
        share = min(images - budget, round(ws.params.label.accuracy_share * images))
        assert share > 0 and f"{budget + share} task(s) imported" in label("push", batch)
        state = load_state(ws, batch)
        assert state is not None and len(state.tasks) == budget + share and len(state.accuracy_share) == share
        labelled = label_like_a_person(server, sorted(state.tasks.items(), key=lambda item: item[1]),
                                       truth(delivery / "annotations.json"), SIZE)
        pulled = label("pull", batch)
    name = labelled_name(batch)
    assert f"-> labelled batch {name}" in pulled and "detops.batch.labelled emitted" in pulled, pulled

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("retrain/retrain-on-drift")
        only_it = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        [started] = wait_until(lambda: [r for r in client.read_flow_runs(deployment_filter=only_it)
                                        if r.parameters.get("batch") == name], 60, "the run the labelled batch starts",
                               worker)
    run = _final(started.id, 420, worker)
    assert run.state.is_completed(), f"{run.state}\n{tail(worker, 80)}"
    dataset = json.loads(ws.dataset_json.read_text(encoding="utf-8"))
    assert name in dataset["info"]["batches"]
    assert {im["file_name"].rsplit("/", 1)[-1] for im in dataset["images"] if im.get("batch") == name} == {
        Path(f).name for f in labelled}
    client = connect(ws)
    [newest] = sorted(client.search_model_versions(f"name = '{ws.params.mlflow.registered_model}'"),
                      key=lambda v: int(v.version))[-1:]
    assert name in newest.tags["data.batches"].split(","), newest.tags  # the version's lineage names the batch
    assert newest.run_id and name in client.get_run(newest.run_id).data.tags["data.batches"]


SLEEPER = '''\
import os
import time
from pathlib import Path

from prefect import flow


@flow
def sleeper(marks: str) -> int:
    """Notes each start (its process id); the first start sleeps until it is killed, a restart ends at once."""
    with Path(marks).open("a") as out:
        out.write(f"{os.getpid()}\\n")
    starts = len(Path(marks).read_text().split())
    if starts == 1:
        time.sleep(900)
    return starts
'''


def _heartbeats(api_url: str, flow_run_id: Any) -> int:
    import httpx

    body = {"filter": {"event": {"name": [HEARTBEAT]}, "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}},
            "limit": 50}
    return len(httpx.post(f"{api_url}/events/filter", json=body, timeout=10).json()["events"])


def _start_worker(pool: str, home: Path, api_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool], cwd=home,
                                env=_child_env(home, api_url), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.mark.slow
def test_a_run_whose_worker_dies_is_marked_crashed_and_started_again(
    deployed: str, api: str, prefect_home: Path, workspace: Path, tmp_path: Path
) -> None:
    """The worker and its run's process killed with -9, as when their machine dies: nothing reports the end of the
    run. The automation `detops deploy` made sees its heartbeats stop, marks it Crashed (freeing the pool's one
    slot) and schedules it again; the worker that takes over (another machine, or this one restarted) starts it.
    Nobody touches the run. Its own pool, so the suite's worker does not take it."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    from flows.deploy.server import ensure_work_pool

    params = load_params(workspace / "params.yaml")
    (tmp_path / "sleeper.py").write_text(SLEEPER, encoding="utf-8")
    marks, log = tmp_path / "starts.txt", tmp_path / "worker.log"
    with get_client(sync_client=True) as client:
        ensure_work_pool(client, "detops-zombie")
    RunnerDeployment.from_storage(  # type: ignore[union-attr]
        storage=LocalStorage(str(tmp_path)), entrypoint="sleeper.py:sleeper", name="zombie", tags=list(TAGS),
        work_pool_name="detops-zombie", job_variables=job_variables(params),
    ).apply()
    first = _start_worker("detops-zombie", prefect_home, api, log)
    second: subprocess.Popen[bytes] | None = None
    try:
        run = run_deployment("sleeper/zombie", parameters={"marks": str(marks)}, timeout=0)
        wait_until(lambda: _heartbeats(api, run.id), 120, "the run's first heartbeat", log)  # type: ignore[union-attr]
        [pid] = [int(line) for line in marks.read_text().split()]
        os.kill(first.pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)  # the run's process: a child of the worker in a session of its own
        first.wait(timeout=10)
        second = _start_worker("detops-zombie", prefect_home, api, log)

        # Crashed is final but passing here: the automation's next action schedules the run again a moment later
        done = _final(run.id, params.deploy.dead_after_seconds + 120, log, passing=("Crashed",))  # type: ignore[union-attr]
        with get_client(sync_client=True) as client:
            history = sorted(client.read_flow_run_states(done.id), key=lambda s: s.timestamp)
    finally:
        for worker in (first, second):
            if worker is not None:
                _stop(worker)
    assert done.state.is_completed(), f"{done.state}\n{tail(log, 80)}"
    names = [s.name for s in history]
    crashed = names.index("Crashed")
    assert names[crashed:crashed + 2] == ["Crashed", "AwaitingRetry"] and names[-2:] == ["Running", "Completed"], names
    assert history[crashed].message == CRASHED_MESSAGE.format(seconds=params.deploy.dead_after_seconds)
    assert history[crashed + 1].message == RESCHEDULED_MESSAGE
    assert names[:crashed].count("Running") == 1  # started once before, never ended but by the automation
    starts = [int(line) for line in marks.read_text().split()]
    assert len(starts) == 2 and starts[0] == pid != starts[1]


# ------------------------------------------------------- Kubernetes work pool: the Jobs rendered as the worker does

K8S_POOL, K8S_IMAGE, K8S_SECRET = "detops-k8s", "registry.example.com/detops:0.1.0", "detops-env"
K8S_REPOSITORY = "https://git.example.com/team/detops.git"  # never cloned here: the pods would clone it
K8S = [
    "deploy.infrastructure=kubernetes", f"deploy.work_pool={K8S_POOL}", f"deploy.image={K8S_IMAGE}",
    f"deploy.repository={K8S_REPOSITORY}", f"deploy.env_secret={K8S_SECRET}", "deploy.gpus=2",
    "deploy.node_selector={cloud.google.com/gke-accelerator: nvidia-l4}",
    "deploy.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
    "deploy.service_account=detops-runs",  # deployments/k8s-train/rbac.yaml: a multi-node run submits a Job
]
# prefect-kubernetes' worker refuses a manifest without these two in the pod spec (where Kubernetes has no such
# fields; the API server drops them with a warning), so the strict schema check leaves them out.
PREFECT_POD_FIELDS = ("parallelism", "completions")


def _valid_job(manifest: dict[str, Any]) -> None:
    import copy

    import kubernetes_validate

    job = copy.deepcopy(manifest)
    pod = job["spec"]["template"]["spec"]
    assert {f: pod.pop(f) for f in PREFECT_POD_FIELDS} == dict.fromkeys(PREFECT_POD_FIELDS, 1)
    version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(job, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"not a valid Kubernetes {version} Job at {'.'.join(map(str, exc.path))}: {exc.message}")


async def _rendered_jobs(pool_name: str, deployment_names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each deployment's Job as the Kubernetes worker renders it for a new run (KubernetesWorkerJobConfiguration's
    resolve_for_flow_run: from_template_and_values, then prepare_for_flow_run); the runs are deleted, no worker."""
    from prefect import get_client
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    jobs = {}
    async with get_client() as client:
        pool = await client.read_work_pool(pool_name)
        for name in deployment_names:
            deployment = await client.read_deployment_by_name(name)
            run = await client.create_flow_run_from_deployment(deployment.id)
            try:
                config = await KubernetesWorkerJobConfiguration.resolve_for_flow_run(
                    run, client=client, work_pool=pool, worker_name="detops-test-render")
            finally:
                await client.delete_flow_run(run.id)
            jobs[name] = config.job_manifest
    return jobs


def test_a_kubernetes_pool_needs_an_image_a_repository_and_a_prefect_promotion_lock(tmp_path: Path) -> None:
    from detops.errors import DeployError, ParamsError
    from detops.workspace import Workspace
    from flows.deploy.server import deploy

    with pytest.raises(ParamsError, match=re.escape("needs deploy.image and deploy.repository")):
        load_params(REPO / "params.yaml", ["deploy.infrastructure=kubernetes"])
    with pytest.raises(ParamsError, match=re.escape("deploy.env_secret")):
        load_params(REPO / "params.yaml", [*K8S, "deploy.env_secret=Detops_Env"])
    with pytest.raises(DeployError, match="--prefect-yaml writes the process pool"):
        prefect_yaml(load_params(REPO / "params.yaml", K8S))
    with pytest.raises(DeployError, match=re.escape("needs promote.lock: prefect")):  # before any server is asked
        deploy(Workspace.at(tmp_path, load_params(REPO / "params.yaml", [*K8S, "promote.lock=file"])))


@pytest.mark.slow
def test_deploy_to_kubernetes_makes_the_pool_and_jobs_that_validate(
    prefect_server: str, prefect_home: Path, api: str, webhook: Webhook, tmp_path: Path
) -> None:
    """`detops deploy` with deploy.infrastructure kubernetes: the pool holds the template made from
    prefect-kubernetes' default, and the Job the worker would create for each deployment's run is a valid Kubernetes
    Job with the image, the Secret's env, the node selector and tolerations, and a GPU limit on the runs that train;
    the runs clone the deployed commit. Last in the module: it moves the suite's deployments to this pool."""
    import asyncio

    from prefect import get_client

    from flows.deploy.kubernetes import base_job_template, pull_steps

    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for item in [*TINY, *K8S, f"deploy.webhook_url={webhook.url}"]:  # the suite's automations, unchanged
        apply_override(raw, item)
    workspace = tmp_path / "detector"  # a folder of the repository: the runs start there in their clone
    workspace.mkdir()
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["git", "init", "-q"], ["git", "add", "detector/params.yaml"], [*git, "commit", "-qm", "ok"]):
        subprocess.run(command, cwd=tmp_path, check=True, timeout=30)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True,
                            check=True).stdout.strip()
    params = load_params(workspace / "params.yaml")

    out = _detops(workspace, prefect_home, prefect_server, "deploy")
    assert f"work pool {K8S_POOL!r}: created (kubernetes" in out and "--type kubernetes" in out, out
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool(K8S_POOL)
        deployments = {name: client.read_deployment_by_name(name) for name in NAMES}
    assert (pool.type, pool.concurrency_limit) == ("kubernetes", 1)
    assert pool.base_job_template == base_job_template(params.deploy)
    for deployment in deployments.values():
        assert deployment.work_pool_name == K8S_POOL
        assert deployment.pull_steps == pull_steps(K8S_REPOSITORY, commit)
        assert deployment.parameters == {"workspace": "detector"}  # in the clone, where the pull steps leave the run
    git_clone = deployments["retrain/retrain-scheduled"].pull_steps[0]["prefect.deployments.steps.git_clone"]
    assert (git_clone["repository"], git_clone["commit_sha"]) == (K8S_REPOSITORY, commit)

    jobs = asyncio.run(_rendered_jobs(K8S_POOL, NAMES))
    for name, job in jobs.items():
        _valid_job(job)
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == K8S_IMAGE
        assert container["envFrom"] == [{"secretRef": {"name": K8S_SECRET}}]
        assert {"name": HEARTBEAT_ENV, "value": "30"} in container["env"]
        assert {"name": CODE_SOURCE_ENV, "value": f"git_clone {K8S_REPOSITORY}@{commit}"} in container["env"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["serviceAccountName"] == "detops-runs"
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        assert gpus == (2 if name.startswith("retrain/") else None), name

    (workspace / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=True), encoding="utf-8")  # same params
    again = _detops(workspace, prefect_home, prefect_server, "deploy")  # converges, the pool updated in place
    assert f"the runs clone commit {commit[:12]}, without the uncommitted changes to detector/params.yaml" in again
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(K8S_POOL).base_job_template == pool.base_job_template
