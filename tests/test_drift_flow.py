"""The drift flow against Prefect's test harness: new complete batches are checked once and a drifted one is
announced once over two ticks; a drift-triggered retraining accepts a labelled batch into the dataset and
trains, and ends an unlabelled one with the list of images to label, without training."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _monitoring_fixtures import batch_from, count_reference_loads, darker, sample

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["monitor.screenshot=false", "monitor.min_batch_size=20", "validate.data_docs=false",
            "train.image_size=128", "train.epochs=1", "train.batch_size=8", "train.fpn_channels=16",
            "train.num_workers=0", "evaluate.num_sample_images=2", "export.latency_runs=3", "export.warmup_runs=0",
            "export.calibration_images=4", "export.fp16=false", "split.dedup=false"]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace trained on one seed of the sample, with settings in its params.yaml; three deliveries."""
    import yaml

    from detops.config.loader import apply_override

    root = tmp_path_factory.mktemp("drift") / "ws"
    root.mkdir()
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    for item in [*SETTINGS, "import.source=data/raw/base"]:
        apply_override(raw, item)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    sample(root / "data/raw/base", seed=0)
    landing = root / "data/landing"
    other = sample(root.parent / "other", seed=5, num_images=40)
    batch_from(other, landing, "dark-labelled", darker)  # COCO labels: can join the dataset
    unlabelled = batch_from(other, landing, "dark-unlabelled", darker)
    (unlabelled / "annotations.json").unlink()  # images only
    batch_from(other, landing, "half-copied", darker, manifest="")  # no manifest yet: never read
    from detops.config import load_params
    from detops.steps import import_, split, validate
    from detops.workspace import Workspace

    ws = Workspace.at(root, load_params(root / "params.yaml"))
    for step in (import_, validate, split):
        step.run(ws)  # the reference: the train split
    return root


@pytest.mark.slow
def test_drift_is_announced_once_then_retraining_takes_the_batch(
    prefect_api: None, drifted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.drift_check as drift_flow
    from flows.drift_check import drift_check
    from flows.retrain import retrain

    announced: list[dict[str, Any]] = []
    real = drift_flow.announce

    def counting(ws: Any, check: dict[str, Any]) -> None:
        announced.append(check)
        real(ws, check)

    monkeypatch.setattr(drift_flow, "announce", counting)
    loads = count_reference_loads(monkeypatch)
    first = drift_check(workspace=str(drifted))
    assert set(first) == {"dark-labelled", "dark-unlabelled"}  # the half-copied batch is not read
    assert loads == ["reference"]  # one load for the tick, however many batches arrived
    assert (drifted / "reports/index.html").is_file()  # the flow, not the monitor step, builds the run page
    assert all(v["verdict"] == "drift" and "brightness" in v["drifted_columns"] for v in first.values())
    assert drift_check(workspace=str(drifted)) == {}  # second tick: nothing new, nothing announced
    assert sorted(c["batch"] for c in announced) == ["dark-labelled", "dark-unlabelled"]
    assert {c["batch"]: c["labelled"] for c in announced} == {"dark-labelled": True, "dark-unlabelled": False}

    result = retrain(workspace=str(drifted), batch="dark-unlabelled")
    assert result["result"] == "drift found, labels needed" and len(result["images_to_label"]) == 40
    listed = (drifted / result["list"]).read_text().splitlines()
    assert len(listed) == 40 and all(Path(p).is_file() for p in listed)
    assert not (drifted / "models/best.ckpt").exists()  # no retraining

    before = len(json.loads((drifted / "data/prepared/dataset.json").read_text())["images"])
    done = retrain(workspace=str(drifted), batch="dark-labelled")
    assert done["promote"]["step"] == "promote"
    dataset = json.loads((drifted / "data/prepared/dataset.json").read_text())
    assert len(dataset["images"]) == before + 40 and dataset["info"]["batches"] == ["dark-labelled"]
    assert (drifted / "data/raw/accepted/dark-labelled/annotations.json").is_file()
    assert not (drifted / "data/raw/accepted/dark-labelled/_READY").exists()
    assert (drifted / "data/landing/dark-labelled/_READY").is_file()  # the inbox is never modified
    # the new champion carries its reference feature table: monitoring compares with it from now on
    from detops.config import load_params
    from detops.monitoring.reference import load_reference
    from detops.workspace import Workspace

    table, source = load_reference(Workspace.at(drifted, load_params(drifted / "params.yaml")))
    assert source.startswith("champion v") and len(table) == len(json.loads(
        (drifted / "data/prepared/train.json").read_text())["images"])
    shutil.rmtree(drifted / "data/raw/accepted")


@pytest.mark.slow
def test_a_batch_run_finishes_an_interrupted_training_first_so_it_resumes(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed run that Prefect starts again can queue behind a retrain-on-drift run. Taking the batch first would
    change the data, so the killed training's checkpoint would be set aside and its epochs lost: the batch run
    finishes that training on the data it had (resuming it), then takes the batch."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from detops.config import load_params
    from detops.config.loader import apply_override
    from detops.steps import import_, split, validate
    from detops.tracking import mlflow_client
    from detops.workspace import RESUME_DIR, Workspace
    from flows.retrain import retrain

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path / "ws"
    root.mkdir()
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    for item in [*SETTINGS, "import.source=data/raw/base", "train.epochs=3", "promote.min_improvement=0"]:
        apply_override(raw, item)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    sample(root / "data/raw/base", seed=0)
    batch_from(sample(tmp_path / "other", seed=5, num_images=40), root / "data/landing", "dark-labelled", darker)
    ws = Workspace.at(root, load_params(root / "params.yaml"))
    for step in (import_, validate, split):
        step.run(ws)

    # `detops train` killed with -9 once its first epoch's checkpoint is written: two epochs left to lose
    train = subprocess.Popen([str(Path(sys.executable).parent / "detops"), "-w", str(root), "train"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not [p for p in (root / RESUME_DIR).glob("*.ckpt") if not p.name.endswith(".best-weights.ckpt")]:
            assert train.poll() is None and time.monotonic() < deadline, "no resume checkpoint from `detops train`"
            time.sleep(0.2)
    finally:
        os.killpg(train.pid, signal.SIGKILL)
        train.wait(timeout=60)
    assert not (root / "models/last.ckpt").exists(), "the training finished before the kill: the test proved nothing"

    before = len(json.loads((root / "data/prepared/dataset.json").read_text())["images"])
    done = retrain(workspace=str(root), batch="dark-labelled")
    assert done["promote"]["step"] == "promote"
    assert len(json.loads((root / "data/prepared/dataset.json").read_text())["images"]) == before + 40
    assert not (root / RESUME_DIR / "set-aside").exists()  # nothing was set aside: the checkpoint went on
    assert not list((root / RESUME_DIR).glob("*.ckpt"))
    client = mlflow_client(ws)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "attributes.status = 'FINISHED'")
    resumed = [r for r in runs if "detops.resumed_after_step" in r.data.tags]
    assert len(resumed) == 1 and len(runs) == 2, [r.data.tags for r in runs]  # the resumed training, then the batch's
