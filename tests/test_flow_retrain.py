"""The main job end to end: the Prefect `retrain` flow on a tiny dataset, against Prefect's test harness (a
real temporary API server shared by the module), with MLflow in a workspace SQLite store.

Cache tests assert what ran (task states: Cached or Completed), never file times."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    "export.latency_runs=3",
    "export.warmup_runs=0",
    "export.calibration_images=4",
    "validate.data_docs=false",
]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def task_states(state: Any) -> dict[str, str]:
    """Task name -> final state name (Completed, Cached, Failed) of the flow run behind `state`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.state.name for run in runs if run.state is not None}


def run_flow(workspace: Path, *extra: str, params: dict[str, Any] | None = None) -> tuple[Any, dict[str, str]]:
    from flows.retrain import retrain

    overlay = {} if params is None else {"params": params}  # no overlay: the form's default, params.yaml as it is
    state = retrain(workspace=str(workspace), overrides=[*TINY, *extra], return_state=True, **overlay)
    return state, task_states(state)


@pytest.fixture(scope="module")
def own_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose dataset is a folder of its own (not the generated sample), so an image can change."""
    from detops.config import load_params
    from detops.steps import sample
    from detops.workspace import Workspace

    root = tmp_path_factory.mktemp("flow") / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    sample.run(Workspace.at(root, load_params(root / "params.yaml", [*TINY, "sample.name=mine"])))
    return root


MINE = ("import.source=data/raw/mine",)


@pytest.mark.slow
def test_flow_runs_every_step_then_caches_all_but_promote(prefect_api: None, own_dataset: Path) -> None:
    import mlflow

    state, states = run_flow(own_dataset, *MINE)
    assert state.is_completed()
    assert states == {verb: "Completed" for verb in
                      ("import", "validate", "split", "train", "evaluate", "export", "promote")}
    result = state.result()
    assert list(result) == ["import", "validate", "split", "train", "evaluate", "export", "promote"]
    metrics = json.loads((own_dataset / "reports/metrics.json").read_text())
    assert 0.0 <= metrics["test/map_50"] <= 1.0
    run_id = json.loads((own_dataset / "reports/mlflow_run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{own_dataset / 'mlflow.db'}").get_run(run_id)
    assert run.data.params["train.epochs"] == "2" and run.data.tags["data.content_hash"]
    assert run.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    from detops.tracking import file_md5

    datasets = {d.dataset.name.split()[0]: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert datasets == {s: file_md5(own_dataset / f"data/prepared/{s}.json") for s in ("train", "val", "test")}
    decision = json.loads((own_dataset / "reports/promotion.json").read_text())

    # Nothing changed: every step is served from cache except promote, which must not promote an equal model.
    again, states = run_flow(own_dataset, *MINE)
    assert again.is_completed()
    assert states == {**{verb: "Cached" for verb in ("import", "validate", "split", "train", "evaluate", "export")},
                      "promote": "Completed"}
    second = json.loads((own_dataset / "reports/promotion.json").read_text())
    assert second["version"] == decision["version"]  # one registered version per training run

    # A changed param re-runs exactly the steps that declare its section.
    _, states = run_flow(own_dataset, *MINE, "evaluate.nms_iou=0.5")
    assert states["import"] == states["validate"] == states["split"] == "Cached"
    assert states["train"] == states["evaluate"] == states["export"] == "Completed"

    # A lost output re-runs its step (and only what depends on what changed).
    (own_dataset / "reports/metrics.json").unlink()
    _, states = run_flow(own_dataset, *MINE, "evaluate.nms_iou=0.5")
    assert states["evaluate"] == "Completed" and states["train"] == "Cached"

    # One changed image re-runs everything from import.
    image = sorted((own_dataset / "data/raw/mine/images").iterdir())[0]
    from PIL import Image

    with Image.open(image) as img:
        img.rotate(90).save(image)
    _, states = run_flow(own_dataset, *MINE, "evaluate.nms_iou=0.5")
    assert all(states[v] == "Completed" for v in ("import", "validate", "split", "train"))


@pytest.mark.slow
def test_a_code_change_reruns_the_steps_that_use_it(prefect_api: None, own_dataset: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key carries the installed code's fingerprint, per step: a change in a module only `train` reaches
    (detops.training.callbacks, seen here as a changed fingerprint of the steps that reach it) re-runs train, not
    the data steps. Training is deterministic, so best.ckpt comes out byte-identical; the new MLflow run still
    re-runs evaluate and export (the run record is train's declared output and their dep), and promote registers
    exports stamped with the new run."""
    import detops.pipeline as pipeline
    from detops.filehash import file_digest
    from detops.inference.loading import load_predictor
    from detops.steps.graph import Step

    run_flow(own_dataset, *MINE)
    best = file_digest(own_dataset / "models/best.ckpt")
    original = pipeline.code_fingerprint

    def changed(step: Step) -> str:
        return original(step) + ("-edited" if "detops.training.callbacks" in pipeline.code_files(step) else "")

    monkeypatch.setattr(pipeline, "code_fingerprint", changed)
    state, states = run_flow(own_dataset, *MINE)
    assert state.is_completed(), state.message
    assert states["import"] == states["validate"] == states["split"] == "Cached"
    assert states["train"] == states["evaluate"] == states["export"] == states["promote"] == "Completed"
    assert file_digest(own_dataset / "models/best.ckpt") == best
    run_id = json.loads((own_dataset / "reports/mlflow_run.json").read_text())["run_id"]
    onnx = next((own_dataset / "models/export").rglob("*.onnx"))
    assert load_predictor(onnx, device="cpu").meta.run_id == run_id
    assert json.loads((own_dataset / "reports/promotion.json").read_text())["run_id"] == run_id


@pytest.mark.slow
def test_ui_params_overlay_params_yaml_and_a_failed_gate_fails_the_run(prefect_api: None, tmp_path: Path) -> None:
    """The embedded sample; a UI form setting one field keeps every other params.yaml value; a failed data
    gate fails the run with its reason and registers nothing."""
    import yaml

    from flows.retrain import workspace_for

    root = tmp_path / "ws"
    root.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["lr"] = 0.0123  # a value only params.yaml holds
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    ws = workspace_for(str(root), {"train": {"epochs": 1}}, [])
    assert ws.params.train.epochs == 1 and ws.params.train.lr == 0.0123

    state, states = run_flow(root, "validate.min_box_area=100000")  # every box is too small: the gate fails
    assert state.is_failed() and "validate" in states and states["validate"] == "Failed"
    assert "train" not in states and "promote" not in states
    assert "box" in str(state.message).lower() or "validation" in str(state.message).lower()


@pytest.mark.slow
def test_multi_device_training_runs_through_the_cli_inside_the_flow(prefect_api: None, tmp_path: Path) -> None:
    """Lightning's DDP launcher re-runs the current program once per extra device: inside a flow, training on
    several devices goes through `detops train` in a child process (2 CPU processes here, as 2 GPUs would)."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    state, states = run_flow(root, "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp",
                             "train.epochs=1")
    assert state.is_completed(), state.message
    assert states["train"] == "Completed" and states["promote"] == "Completed"
    train = state.result()["train"]
    assert any("child process" in note for note in train["notes"]) and train["metrics"]["epochs"] == 1
    assert (root / "models/best.ckpt").is_file()


LIBRARY_PRINTS = ("Collecting tensor data", "Finding optimal threshold",  # ONNX Runtime's calibrator
                  "Warning:", "UserWarning", "FutureWarning", "DeprecationWarning",
                  "GPU available", "TPU available", "LOCAL_RANK", "Trainable params",  # Lightning
                  "Calculating Metrics", "it/s]")  # Great Expectations' and other tqdm bars


@pytest.mark.slow
def test_editing_installed_code_reruns_exactly_the_steps_that_import_it(tmp_path: Path) -> None:
    """A workspace outside the repository, detops imported from a copy of its package (as a user's install).
    After a comment is appended to that copy's mAP code, every step that reaches it runs again (train through
    its validation mAP, evaluate, export through the scorer, promote) and the data steps stay cached; a comment
    appended to the drift code changes no cacheable step's key."""
    import json
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    shutil.copytree(REPO / "src" / "detops", site / "detops", ignore=shutil.ignore_patterns("__pycache__"))
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    header = f"import detops, json, sys\nassert detops.__file__.startswith({str(site)!r}), detops.__file__\n"
    flow = header + (
        "from flows.retrain import retrain\n"
        "from test_flow_retrain import task_states\n"
        f"state = retrain(workspace={str(root)!r}, overrides={[*TINY, 'train.epochs=1', 'export.fp16=false']!r},"
        " return_state=True)\n"
        "print('OUT=' + json.dumps(task_states(state)))\n"
    )
    keys = header + (
        "from detops.pipeline import code_fingerprint\n"
        "from detops.steps.graph import STEPS\n"
        "print('OUT=' + json.dumps({n: code_fingerprint(s) for n, s in STEPS.items() if s.cacheable}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING"))}
    env |= {"PYTHONPATH": os.pathsep.join([str(site), str(REPO / "tests"), str(REPO)]),
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a loaded 2-core machine starts it slowly

    outputs: list[str] = []

    def run(script: str) -> dict[str, str]:
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout + done.stderr)
        line = next(x for x in done.stdout.splitlines() if x.startswith("OUT="))
        return dict(json.loads(line.removeprefix("OUT=")))

    def append_comment(module: str) -> None:
        path = site / "detops" / module
        path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")

    assert set(run(flow).values()) == {"Completed"}
    # what a user's terminal shows: Prefect's log and our summary, no library print (they are in the step logs)
    for library_print in LIBRARY_PRINTS:
        assert library_print not in outputs[0], library_print
    assert "Collecting tensor data" in (root / "reports" / "logs" / "export.log").read_text(encoding="utf-8")
    assert "detops retrain" in outputs[0]  # the summary
    append_comment("evaluation/map_metric.py")
    states = run(flow)
    assert states["sample"] == states["import"] == states["validate"] == states["split"] == "Cached", states
    assert states["train"] == states["evaluate"] == states["export"] == states["promote"] == "Completed", states

    before = run(keys)
    append_comment("monitoring/drift.py")
    assert run(keys) == before
