"""New data batches and bad input: manifest, formats, the ledger, unreadable images, too little data, no reference."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _files import tree_bytes
from _monitoring_fixtures import NO_SCREENSHOT, batch_from, count_reference_loads, sample, workspace, write_train_split
from typer.testing import CliRunner

from detops.cli import app
from detops.config import load_params
from detops.dataset.canonical import write_dataset
from detops.errors import DataError, ParamsError
from detops.monitoring.batches import complete_batches, detect_format, find_batch, ledger, new_batches, read_batch
from detops.steps import monitor

REPO = Path(__file__).resolve().parents[1]
IMAGES = 60


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workspace whose train split is the sample (seed 0); seed 1 is the source of the batches."""
    root = tmp_path_factory.mktemp("batches")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    write_train_split(workspace(root), sample(root / "data/raw/sample", seed=0, num_images=IMAGES))
    sample(root / "seed1", seed=1, num_images=IMAGES)
    yield root


@pytest.fixture
def landing(root: Path) -> Iterator[Path]:
    """An empty landing folder and ledger for each test (the reports and the MLflow store are shared)."""
    folder = root / "data/landing"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    yield folder


def verdict(root: Path) -> dict:
    return json.loads((root / "reports/drift/verdict.json").read_text(encoding="utf-8"))


def test_empty_landing_folder_is_no_drift_with_a_clear_message(root: Path, landing: Path) -> None:
    result = CliRunner().invoke(app, ["--workspace", str(root), "monitor"])
    assert result.exit_code == 0, result.output
    assert "no new complete batch in data/landing" in result.output
    assert verdict(root) == {"verdict": "no drift", "checks": [],
                             "message": "no new complete batch in data/landing (a batch is a folder holding _READY): "
                                        "nothing to check"}


def test_a_batch_without_its_manifest_is_not_read(root: Path, landing: Path) -> None:
    batch_from(root / "seed1", landing, "half-copied", manifest="")
    ws = workspace(root, *NO_SCREENSHOT)
    assert complete_batches(ws) == []
    result = monitor.run(ws)
    assert result.metrics == {"verdict": "no drift", "checks": 0}
    with pytest.raises(DataError, match=r"'half-copied' is not complete: .*_READY is missing"):
        monitor.run(ws, batch="half-copied")
    assert ledger(ws).entries() == {}


def test_a_batch_is_checked_once(root: Path, landing: Path) -> None:
    ws = workspace(root, *NO_SCREENSHOT)
    batch_from(root / "seed1", landing, "b1")
    first = monitor.run(ws)
    assert first.metrics["checks"] == 1 and first.metrics["verdict"] == "no drift"
    assert set(ledger(ws).entries()) == {"b1"}
    assert new_batches(ws) == []
    assert monitor.run(ws).metrics["checks"] == 0  # the next tick finds nothing new
    batch_from(root / "seed1", landing, "b2")
    assert [b.name for b in new_batches(ws)] == ["b2"]
    assert monitor.run(ws).metrics["checks"] == 1
    assert set(ledger(ws).entries()) == {"b1", "b2"}


def test_the_reference_is_loaded_once_however_many_batches_arrive(
    root: Path, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One run checks every new batch against one load of the reference: the landing folder's (a tick of the drift
    check) and the batches named (the flow's call)."""
    loads = count_reference_loads(monkeypatch)
    ws = workspace(root, *NO_SCREENSHOT)
    for name in ("b1", "b2", "b3"):
        batch_from(root / "seed1", landing, name)
    assert monitor.run(ws).metrics["checks"] == 3
    assert loads == ["reference"]
    assert set(ledger(ws).entries()) == {"b1", "b2", "b3"}
    loads.clear()
    for name in ("b4", "b5"):
        batch_from(root / "seed1", landing, name)
    result = monitor.run(ws, batches=["b4", "b5"])
    assert result.metrics["checks"] == 2 and loads == ["reference"]
    assert [c["batch"] for c in verdict(root)["checks"]] == ["b4", "b5"]


def test_a_run_that_fails_half_way_records_no_batch(root: Path, landing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger is written once every check is done: a batch is never left checked but unannounced."""
    import detops.monitoring.mlflow_log as mlflow_log

    logged: list[str] = []

    def failing_second(ws: Any, check: dict[str, Any], folder: Path) -> str:
        logged.append(check["batch"])
        if len(logged) == 2:
            raise ConnectionError("tracking server went away")
        return "run-id"

    monkeypatch.setattr(mlflow_log, "log_check", failing_second)
    ws = workspace(root, *NO_SCREENSHOT)
    for name in ("b1", "b2"):
        batch_from(root / "seed1", landing, name)
    with pytest.raises(ConnectionError):
        monitor.run(ws)
    assert logged == ["b1", "b2"] and ledger(ws).entries() == {}
    assert [b.name for b in new_batches(ws)] == ["b1", "b2"]  # the next tick checks both again


def test_unreadable_images_are_skipped_and_listed(root: Path, landing: Path) -> None:
    batch = batch_from(root / "seed1", landing, "broken", manifest="")
    truncated = batch / "images/000001.png"
    truncated.write_bytes(truncated.read_bytes()[:300])
    (batch / "images/000002.png").write_text("not an image", encoding="utf-8")
    (batch / "_READY").touch()
    ws = workspace(root, *NO_SCREENSHOT)
    before = tree_bytes(batch)

    result = monitor.run(ws, batch="broken")
    assert tree_bytes(batch) == before  # the delivery is untouched
    check = verdict(root)["checks"][0]
    assert check["images"] == IMAGES - 2
    assert len(check["skipped"]) == 2
    assert any("000001.png" in s and "truncated" in s for s in check["skipped"])
    assert any("000002.png" in s for s in check["skipped"])
    assert check["verdict"] == "no drift", check["reason"]
    assert result.metrics["skipped_images"] == 2
    assert any("2 unreadable image(s) skipped" in n and "000001.png" in n for n in result.notes)


def test_a_batch_below_the_minimum_size_is_insufficient_data(root: Path, landing: Path) -> None:
    small = sample(landing.parent / "small-src", seed=2, num_images=10)
    batch = batch_from(small, landing, "small")
    ws = workspace(root, *NO_SCREENSHOT)
    before = tree_bytes(batch)
    result = monitor.run(ws, batch="small")
    assert tree_bytes(batch) == before
    check = verdict(root)["checks"][0]
    assert result.metrics["verdict"] == check["verdict"] == "insufficient data"
    assert "10 readable image(s)" in check["reason"] and "min_batch_size=50" in check["reason"]
    assert "html" not in check["reports"]
    assert ledger(ws).entries()["small"]["verdict"] == "insufficient data"


def test_an_unlabelled_batch_is_compared_on_its_image_columns(root: Path, landing: Path) -> None:
    batch = landing / "plain"
    shutil.copytree(root / "seed1/images", batch / "photos")
    (batch / "_READY").touch()
    ws = workspace(root, *NO_SCREENSHOT)
    assert detect_format(batch) == "images"
    monitor.run(ws, batch="plain")
    check = verdict(root)["checks"][0]
    assert check["labelled"] is False and check["format"] == "images"
    assert {c["column"] for c in check["comparison"]["columns"]} == {
        "brightness", "contrast", "saturation", "sharpness", "width", "height", "aspect_ratio", "file_size"}
    assert any("no labels?" in n and "class_circle" in n for n in check["notes"])
    assert check["verdict"] == "no drift", check["reason"]


def test_a_reference_with_no_images_is_a_clear_error(root: Path, landing: Path) -> None:
    batch = batch_from(root / "seed1", landing, "b")
    empty = root / "data/prepared/empty.json"
    write_dataset(empty, {"info": {"root": "data/raw/sample"}, "images": [], "annotations": [], "categories": []})
    ws = workspace(root, *NO_SCREENSHOT, f"monitor.reference={empty}")
    before = tree_bytes(batch)
    with pytest.raises(DataError, match="the reference dataset has no images"):
        monitor.run(ws, batch="b")
    # nothing lost: the delivery untouched, and the batch still new once the reference is fixed
    assert tree_bytes(batch) == before and "b" not in ledger(ws).entries()
    table = root / "empty.csv"
    table.write_text("file_name,sha1,brightness,contrast,saturation,sharpness,width,height,aspect_ratio,file_size\n")
    with pytest.raises(DataError, match="has no rows"):
        monitor.run(workspace(root, *NO_SCREENSHOT, f"monitor.reference={table}"), batch="b")
    with pytest.raises(DataError, match="reference is missing; run `detops split`"):
        monitor.run(workspace(root, *NO_SCREENSHOT, "paths.prepared=nowhere"), batch="b")


def test_a_yolo_batch_reads_a_missing_label_file_as_a_background_image(root: Path, landing: Path) -> None:
    batch = landing / "yolo"
    (batch / "images").mkdir(parents=True)
    (batch / "labels").mkdir()
    for name in ("000001.png", "000002.png", "000003.png"):
        shutil.copy(root / "seed1/images" / name, batch / "images" / name)
    (batch / "classes.txt").write_text("circle\nsquare\n", encoding="utf-8")
    (batch / "labels/000001.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n", encoding="utf-8")
    (batch / "labels/000002.txt").write_text("", encoding="utf-8")
    (batch / "_READY").touch()
    ws = workspace(root)
    data = read_batch(ws, find_batch(ws, "yolo"))
    assert data.format == "yolo"
    boxes = {im["file_name"]: sum(a["image_id"] == im["id"] for a in data.dataset["annotations"])
             for im in data.dataset["images"]}
    assert boxes == {"images/000001.png": 2, "images/000002.png": 0, "images/000003.png": 0}
    assert any("no label file" in n for n in data.notes)
    assert data.dataset["info"]["root"] == "data/landing/yolo"


def test_label_formats_are_told_apart_by_their_files(tmp_path: Path) -> None:
    (tmp_path / "voc/Annotations").mkdir(parents=True)
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo/data.yaml").write_text("names: [a]\n", encoding="utf-8")
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco/labels.json").write_text("{}", encoding="utf-8")
    assert [detect_format(tmp_path / f) for f in ("voc", "yolo", "coco")] == ["voc", "yolo", "coco"]


def test_a_manifest_named_like_a_label_file_is_refused() -> None:
    with pytest.raises(ParamsError, match="would take it for annotations"):
        load_params(None, ["monitor.manifest=MANIFEST.json"])
