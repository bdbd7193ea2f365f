"""Acceptance: with the default verdict rule, `detops monitor` tells a changed batch from another draw of the same
distribution, and names the changed columns only.

Reference: the synthetic sample (seed 0) as the train split. Batches: another seed, unchanged or darkened, blurred,
halved in size, or drawn with another class mix; each checked through the step, as `detops monitor --batch`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _monitoring_fixtures import (
    NO_SCREENSHOT,
    Change,
    batch_from,
    blurred,
    darker,
    half_size,
    sample,
    tiny_checkpoint,
    workspace,
    write_train_split,
)

from detops.monitoring.batches import ledger
from detops.steps import monitor
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
LABELS = ["box_count", "box_area", "class_circle", "class_square", "class_triangle", "class_star"]
CLASSES = ["class_circle", "class_square", "class_triangle", "class_star"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One workspace for the module (one MLflow store): the reference as train split, seed 1 as the batch source."""
    root = tmp_path_factory.mktemp("monitor")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    ws = workspace(root)
    write_train_split(ws, sample(root / "data/raw/sample", seed=0))
    sample(root / "seed1", seed=1)
    yield root


def check(root: Path, name: str, *overrides: str) -> dict[str, Any]:
    ws = workspace(root, *NO_SCREENSHOT, *overrides)
    monitor.run(ws, batch=name)
    verdict = json.loads((ws.reports / "drift/verdict.json").read_text(encoding="utf-8"))
    assert len(verdict["checks"]) == 1
    result: dict[str, Any] = verdict["checks"][0]
    return result


def assert_not_named(result: dict[str, Any], unchanged: list[str]) -> None:
    named = [c for c in unchanged if c in result["drifted_columns"]]
    assert not named, f"unchanged columns named as drifted: {named} ({result['reason']})"


def test_another_seed_of_the_same_distribution_is_no_drift(root: Path) -> None:
    batch_from(root / "seed1", root / "data/landing", "same")
    result = check(root, "same")
    assert result["verdict"] == "no drift", result["reason"]
    assert result["drifted_columns"] == []
    assert result["images"] == 100 and result["labelled"] and result["format"] == "coco"
    tested = {c["column"] for c in result["comparison"]["columns"]}
    assert tested == {"brightness", "contrast", "saturation", "sharpness", "width", "height", "aspect_ratio",
                      "file_size", *LABELS}
    assert all(c["method"] == "ks" and c["threshold"] == 0.001 for c in result["comparison"]["columns"])


@pytest.mark.parametrize(
    ("name", "change", "size", "drifted", "unchanged"),
    [
        ("dark", darker, 1.0, ["brightness"], ["width", "height", "aspect_ratio", "saturation", *LABELS]),
        ("blur", blurred, 1.0, ["sharpness"], ["brightness", "width", "height", "aspect_ratio", *LABELS]),
        ("half", half_size, 0.5, ["width", "height", "file_size"], ["brightness", "aspect_ratio", *LABELS]),
    ],
    ids=["darkened images drift on brightness", "blurred images drift on sharpness",
         "half-size images drift on width, height and file size"],
)
def test_a_changed_image_property_drifts_on_its_columns_only(
    root: Path, name: str, change: Change, size: float, drifted: list[str], unchanged: list[str]
) -> None:
    batch_from(root / "seed1", root / "data/landing", name, change, scale=size)
    result = check(root, name)
    assert result["verdict"] == "drift"
    assert set(drifted) <= set(result["drifted_columns"])
    assert_not_named(result, unchanged)


def test_another_class_mix_drifts_on_the_class_columns(root: Path) -> None:
    mix = sample(root / "mix", seed=3, weights=[0.1, 0.2, 0.3, 0.4])
    batch_from(mix, root / "data/landing", "mix")
    result = check(root, "mix")
    assert result["verdict"] == "drift"
    assert set(result["drifted_columns"]) <= set(CLASSES)
    assert {"class_circle", "class_star"} <= set(result["drifted_columns"])  # 0.4 -> 0.1 and 0.1 -> 0.4


def test_checks_are_logged_recorded_and_reported(root: Path) -> None:
    """After the checks above: each batch in the ledger, its Evidently files on disk, an MLflow run named monitor."""
    import mlflow

    ws: Workspace = workspace(root)
    entries = ledger(ws).entries()
    assert {"same", "dark", "blur", "half", "mix"} <= set(entries)
    assert entries["dark"]["verdict"] == "drift" and "brightness" in entries["dark"]["drifted_columns"]
    folder = ws.reports / "drift/batches/dark"
    for name in ("report.html", "report.json", "features.parquet", "check.json"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    evidently = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert evidently["metrics"], "Evidently's JSON holds the metric results"
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("detops")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`detops.step` = 'monitor'")
    by_source = {r.data.tags["detops.current"]: r for r in runs}
    dark = by_source["data/landing/dark"]
    assert dark.info.run_name == "monitor" and dark.data.tags["detops.verdict"] == "drift"
    assert dark.data.metrics["drift_score/brightness"] < 0.001


def test_embeddings_drift_with_darkened_images_and_not_with_another_seed(root: Path) -> None:
    tiny_checkpoint(root / "models/best.ckpt", ["circle", "square", "triangle", "star"])
    same = check(root, "same", "monitor.embeddings=true")
    dark = check(root, "dark", "monitor.embeddings=true")
    assert same["comparison"]["embedding"]["drifted"] is False, same["comparison"]["embedding"]
    assert same["verdict"] == "no drift"
    assert "embedding" in dark["drifted_columns"]
    assert_not_named(dark, ["width", "height", "aspect_ratio", *LABELS])
