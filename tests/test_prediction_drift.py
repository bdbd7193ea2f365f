"""Prediction drift, end to end: the tiny model trained, exported and promoted (which logs its prediction
reference), served by a real `detops serve` that captures every answer into batches, and `detops monitor` (the
library step) reading those batches with the prediction columns beside the image features.

- a captured batch is sealed at its size, read by monitor, and its check tests the prediction columns;
- the same images with collapsed answers (one barely-kept box each) drift on the prediction columns only;
- a batch without captured answers gets the champion run on it, with the answers the server gave;
- without a champion the prediction columns are skipped, with a note.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _serve_server import ServeProcess

from detops.config import load_params
from detops.dataset.canonical import subset, write_dataset
from detops.errors import DataError
from detops.monitoring.predictions import (
    CAPTURED_ANSWERS,
    PREDICTIONS_ARTIFACT,
    captured_frame,
    is_prediction_column,
    prediction_row,
    read_captured,
)
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
BATCH = 12
# The tiny model scores low after a few epochs: keep its boxes from 0.05, as the serving tests do.
SETS = ("predict.score_threshold=0.05", "monitor.min_batch_size=10", "monitor.screenshot=false",
        "serve.batch_timeout=0.005")


def test_prediction_columns_of_one_image() -> None:
    row = prediction_row([(0.9, "box"), (0.4, "disc"), (0.6, "box")], ["box", "disc"], low_score=0.5)
    assert row["pred_count"] == 3 and row["pred_score_median"] == 0.6
    assert row["pred_score_mean"] == pytest.approx(1.9 / 3) and row["pred_low_share"] == pytest.approx(1 / 3)
    assert row["pred_class_box"] == pytest.approx(2 / 3) and row["pred_class_disc"] == pytest.approx(1 / 3)
    empty = prediction_row([], ["box", "disc"], low_score=0.5)
    assert empty["pred_count"] == 0 and all(math.isnan(v) for k, v in empty.items() if k != "pred_count")


def test_captured_answers_are_read_and_bad_lines_named(tmp_path: Path) -> None:
    good = {"file_name": "a.png", "model": {"version": "4"}, "score_threshold": 0.1,
            "detections": [{"class_name": "box", "score": 0.2}, {"class_name": "disc", "score": 0.7}]}
    (tmp_path / CAPTURED_ANSWERS).write_text(json.dumps(good) + "\n\n")
    answers = read_captured(tmp_path)
    assert answers is not None and answers[0].version == "4" and answers[0].score_threshold == 0.1
    frame = captured_frame(answers, ["box", "disc"], low_score=0.5, score_threshold=0.3)  # today's is higher
    assert frame.loc[0, "pred_count"] == 1 and frame.loc[0, "pred_class_disc"] == 1.0
    (tmp_path / CAPTURED_ANSWERS).write_text(json.dumps(good) + "\n" + '{"file_name": "b.png"}\n')
    with pytest.raises(DataError, match="line 2: not a captured answer"):
        read_captured(tmp_path)
    assert read_captured(tmp_path / "elsewhere") is None


@dataclass
class Trained:
    root: Path
    overrides: tuple[str, ...]

    def ws(self, *more: str) -> Workspace:
        return Workspace.at(self.root, load_params(self.root / "params.yaml", [*self.overrides, *more]))

    def images(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((self.root / "data" / "raw" / "tiny" / "images").glob("*.png"))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """40 tiny images (20 train, 6 val, 14 test), trained, evaluated, exported and promoted as v1 champion."""
    import mlflow
    from test_promote import FAST
    from test_train import TINY, write_tiny_dataset

    from detops.steps import evaluate, export, promote, train

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("prediction-drift")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    state = Trained(root, (*TINY, *FAST, *SETS))
    ws = state.ws()
    dataset = write_tiny_dataset(root, n_images=40)
    ids = [im["id"] for im in dataset["images"]]
    for name, part in (("train", ids[:20]), ("val", ids[20:26]), ("test", ids[26:])):
        write_dataset(ws.split_json(name), subset(dataset, part))
    train.run(ws)
    evaluate.run(ws)
    export.run(ws)
    assert promote.run(ws).metrics["decision"] == "promoted"
    mp.undo()
    yield state
    mlflow.set_tracking_uri(None)


def _metric(server: ServeProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def _sealed(landing: Path) -> list[Path]:
    return sorted(p.parent for p in landing.glob("capture-*/_READY"))


@pytest.fixture(scope="module")
def captured(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real server capturing every answer (share 1.0) in batches of 12: 12 requests seal one batch; 3 more stay
    in the open batch, which SIGTERM to the server's process (as Kubernetes stops a pod) seals on the way out."""
    landing = trained.root / "data" / "landing"
    sets = (*SETS, "serve.capture_share=1.0", f"serve.capture_batch_size={BATCH}")
    images = trained.images()
    with ServeProcess(trained.root, *sets, log_dir=tmp_path_factory.mktemp("capture-log")) as server:
        server.wait_ready()
        answers = []
        with httpx.Client(timeout=30) as client:
            for i, image in enumerate(images[:BATCH]):
                response = client.post(f"{server.url}/predict", files={"image": ("i.png", image, "image/png")},
                                       headers={"X-Request-Id": f"cap-{i}"})
                assert response.status_code == 200, response.text
                answers.append(response.json())
        deadline = time.monotonic() + 30
        while not _sealed(landing) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_sealed(landing)) == 1, server.log()
        assert _metric(server, "detops_serve_capture_images_total") == BATCH
        assert _metric(server, "detops_serve_capture_batches_total") == 1
        with httpx.Client(timeout=30) as client:
            for i, image in enumerate(images[:3]):  # the same images again, other request ids
                response = client.post(f"{server.url}/predict", files={"image": ("i.png", image, "image/png")},
                                       headers={"X-Request-Id": f"open-{i}"})
                assert response.status_code == 200, response.text
    last = _sealed(landing)  # the server has stopped (SIGTERM, then waited for)
    assert len(last) == 2, f"the open batch was not sealed at SIGTERM:\n{server.log()}"
    assert json.loads((last[1] / "_READY").read_text())["images"] == 3
    batch = _sealed(landing)[0]
    lines = [json.loads(line) for line in (batch / CAPTURED_ANSWERS).read_text().splitlines()]
    assert [line["request_id"] for line in lines] == [f"cap-{i}" for i in range(BATCH)]
    assert [line["detections"] for line in lines] == [a["detections"] for a in answers]  # what the client got
    return batch


def _monitor(trained: Trained, name: str) -> dict[str, Any]:
    from detops.steps import monitor

    ws = trained.ws()
    monitor.run(ws, batch=name)
    checks: list[dict[str, Any]] = json.loads(ws.output("monitor", "verdict").read_text())["checks"]
    return checks[0]


def _tested(check: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in check["comparison"]["columns"]}


def test_promotion_logs_the_prediction_reference(trained: Trained) -> None:
    import pandas as pd

    from detops.registry.aliases import current_champion
    from detops.registry.client import connect

    ws = trained.ws()
    client = connect(ws)
    champion = current_champion(client, ws.params.mlflow.registered_model)
    assert champion is not None
    local = client.download_artifacts(champion.run_id, PREDICTIONS_ARTIFACT, str(trained.root / "ref-check"))
    frame = pd.read_parquet(local)
    assert len(frame) == 14  # one row per test image
    assert {"pred_count", "pred_score_mean", "pred_score_median", "pred_low_share", "pred_class_box",
            "pred_class_disc"} <= set(frame.columns)
    assert frame["pred_count"].sum() > 0


def test_a_captured_batch_is_checked_with_the_prediction_columns(trained: Trained, captured: Path) -> None:
    check = _monitor(trained, captured.name)
    assert check["images"] == BATCH and check["labelled"] is False
    assert check["predictions"]["source"] == "captured answers of version(s) 1"
    tested = _tested(check)
    assert {"pred_count", "pred_score_mean", "brightness"} <= set(tested)
    features = json.loads((trained.ws().output("monitor", "batches") / captured.name / "check.json").read_text())
    assert features["verdict"] == check["verdict"]
    assert not [c for c in check["drifted_columns"] if not is_prediction_column(c)]  # the images are the train's kind


def test_collapsed_answers_drift_on_the_prediction_columns_only(trained: Trained, captured: Path) -> None:
    collapsed = captured.parent / "collapsed"
    shutil.copytree(captured, collapsed)
    lines = [json.loads(line) for line in (collapsed / CAPTURED_ANSWERS).read_text().splitlines()]
    for line in lines:  # the same images; the model now keeps one unsure box, just above the threshold
        line["detections"] = [{**d, "score": 0.0501} for d in line["detections"][:1]]
    (collapsed / CAPTURED_ANSWERS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    baseline = _monitor(trained, captured.name)
    check = _monitor(trained, "collapsed")
    assert check["verdict"] == "drift", check["reason"]
    assert check["drifted_columns"] and all(is_prediction_column(c) for c in check["drifted_columns"])
    assert {"pred_count", "pred_score_mean"} & set(check["drifted_columns"])
    image_columns = [c for c in _tested(check) if not is_prediction_column(c)]
    assert [_tested(check)[c]["score"] for c in image_columns] == [_tested(baseline)[c]["score"]
                                                                   for c in image_columns]


def test_a_batch_without_answers_gets_the_champion_run_on_it(trained: Trained, captured: Path) -> None:
    import pandas as pd

    plain = captured.parent / "plain"
    shutil.copytree(captured, plain, ignore=shutil.ignore_patterns(CAPTURED_ANSWERS))
    check = _monitor(trained, "plain")
    assert check["predictions"]["source"] == "champion v1 run on the images"
    ws = trained.ws()
    ran = pd.read_parquet(ws.output("monitor", "batches") / "plain" / "features.parquet").set_index("file_name")
    served = pd.read_parquet(ws.output("monitor", "batches") / captured.name / "features.parquet"
                             ).set_index("file_name")
    assert ran["pred_count"].to_dict() == served["pred_count"].to_dict()  # the same file, the same threshold
    assert (ran["pred_score_mean"] - served["pred_score_mean"]).abs().max() < 1e-3


def test_without_a_champion_the_prediction_columns_are_skipped(trained: Trained, captured: Path) -> None:
    from detops.registry.client import connect

    ws = trained.ws()
    client = connect(ws)
    name = ws.params.mlflow.registered_model
    version = client.get_registered_model(name).aliases["champion"]
    client.delete_registered_model_alias(name, "champion")
    try:
        check = _monitor(trained, captured.name)
    finally:
        client.set_registered_model_alias(name, "champion", version)
    assert check["predictions"]["source"] is None
    assert any("prediction columns (pred_*) not tested" in note for note in check["notes"])
    assert not [c for c in _tested(check) if is_prediction_column(c)]
