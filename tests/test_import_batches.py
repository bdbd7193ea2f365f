"""Accepted batches join the dataset: `import` reads the dataset plus every batch under import.batches into
one canonical json, old images keep their split, and a batch with foreign classes or no labels is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from detops.config import load_params
from detops.errors import DataError
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
SMALL = ["sample.num_images=24", "sample.image_size=64", "sample.max_object_size=32", "validate.data_docs=false",
         "split.dedup=false"]


def workspace(root: Path, *extra: str) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return Workspace.at(root, load_params(root / "params.yaml", [*SMALL, *extra]))


def make_batch(ws: Workspace, name: str, seed: int, classes: str = "[circle, square, triangle, star]") -> Path:
    """Another sample (COCO) written straight into the accepted folder."""
    from detops.steps import sample

    other = Workspace.at(ws.root, load_params(None, [*SMALL, f"sample.seed={seed}", "sample.num_images=10",
                                                     f"sample.name={name}", f"paths.raw={ws.params.import_.batches}",
                                                     f"sample.classes={classes}",
                                                     "sample.class_weights=[" + ",".join(["1"] * len(
                                                         classes.strip("[]").split(","))) + "]"]))
    sample.run(other)
    return ws.resolve(ws.params.import_.batches) / name


def prepare(ws: Workspace) -> dict[str, str]:
    """import -> validate -> split; returns image sha1 -> split."""
    from detops.steps import import_, split, validate

    import_.run(ws)
    validate.run(ws)
    split.run(ws)
    out = {}
    for name in ("train", "val", "test"):
        data = json.loads(ws.split_json(name).read_text())
        out |= {im["sha1"]: name for im in data["images"]}
    return out


def test_batches_join_the_dataset_and_old_images_keep_their_split(tmp_path: Path) -> None:
    from detops.steps import sample

    ws = workspace(tmp_path / "ws")
    sample.run(ws)
    before = prepare(ws)
    batch = make_batch(ws, "b1", seed=7)
    after = prepare(ws)
    dataset = json.loads(ws.dataset_json.read_text())
    assert len(dataset["images"]) == 24 + 10 and dataset["info"]["batches"] == ["b1"]
    assert dataset["info"]["root"] == "data/raw"
    names = {im["file_name"].split("/")[0] for im in dataset["images"]}
    assert names == {"sample", "accepted"}
    assert {im["batch"] for im in dataset["images"] if "batch" in im} == {"b1"}
    assert all(after[sha1] == split for sha1, split in before.items())  # stable: old images stay put
    assert len(after) == 34
    images = {im["file_name"] for im in dataset["images"]}
    assert all((ws.root / "data/raw" / name).is_file() for name in images)
    assert batch.is_dir()


def test_a_batch_with_foreign_classes_or_no_labels_is_refused(tmp_path: Path) -> None:
    from detops.steps import import_, sample

    ws = workspace(tmp_path / "ws", "sample.classes=[circle, square]", "sample.class_weights=[1, 1]")
    sample.run(ws)
    make_batch(ws, "odd", seed=3, classes="[circle, cross]")
    with pytest.raises(DataError, match=r"batch 'odd': class\(es\) the dataset lacks: 'cross'"):
        import_.run(ws)
    shutil.rmtree(ws.resolve(ws.params.import_.batches) / "odd")
    plain = ws.resolve(ws.params.import_.batches) / "plain"
    plain.mkdir(parents=True)
    shutil.copy(next((ws.raw / "sample" / "images").iterdir()), plain / "x.png")
    with pytest.raises(DataError, match="must be labelled"):
        import_.run(ws)
