"""`detops split` end to end on small synthetic workspaces: outputs, determinism, stability, leakage, edge cases."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from detops.config import load_params
from detops.dataset.canonical import SPLITS, read_dataset
from detops.errors import DataError
from detops.steps import split as split_step
from detops.steps.result import StepResult
from detops.workspace import Workspace

CLASSES = ["car", "person", "bike", "sign"]
WEIGHTS = [0.5, 0.3, 0.15, 0.05]


def _write_image(path: Path, seed: int) -> str:
    """A smooth 64x64 random image: distinct images get unrelated perceptual hashes, copies close ones."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC).save(path)
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _image_record(raw: Path, image_id: int, name: str, seed: int) -> dict[str, Any]:
    sha1 = _write_image(raw / name, seed)
    return {"id": image_id, "file_name": name, "width": 64, "height": 64, "sha1": sha1}


def _boxes(rng: np.random.Generator, image_id: int, first_id: int) -> list[dict[str, Any]]:
    """0-8 boxes (about 1 image in 9 has none), classes drawn with WEIGHTS."""
    classes = rng.choice(len(CLASSES), size=rng.integers(0, 9), p=WEIGHTS)
    return [
        {
            "id": first_id + k,
            "image_id": image_id,
            "category_id": int(c) + 1,
            "bbox": [1, 1, 5, 5],
            "area": 25,
            "iscrowd": 0,
        }
        for k, c in enumerate(classes)
    ]


def make_dataset(raw: Path, n: int, seed: int = 0, prefix: str = "img") -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n):
        images.append(_image_record(raw, i + 1, f"images/{prefix}_{i:04d}.png", seed * 100_000 + i))
        annotations += _boxes(rng, i + 1, len(annotations) + 1)
    return {
        "info": {"root": str(raw)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(CLASSES)],
    }


def renumber(dataset: dict[str, Any]) -> dict[str, Any]:
    """Fresh image/annotation ids (as a re-import would give), same content."""
    new_id = {im["id"]: k + 1 for k, im in enumerate(dataset["images"])}
    return {
        **dataset,
        "images": [{**im, "id": new_id[im["id"]]} for im in dataset["images"]],
        "annotations": [
            {**a, "id": k + 1, "image_id": new_id[a["image_id"]]} for k, a in enumerate(dataset["annotations"])
        ],
    }


def run_split(ws: Path, dataset: dict[str, Any], *overrides: str) -> StepResult:
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "data" / "prepared").mkdir(parents=True, exist_ok=True)
    (ws / "data" / "prepared" / "validated.json").write_text(json.dumps(dataset))
    return split_step.run(Workspace.at(ws, load_params(None, overrides)))


def assignments(ws: Path) -> dict[str, str]:
    payload = json.loads((ws / "data" / "prepared" / "split_assignments.json").read_text())
    return {name: record["split"] for name, record in payload["images"].items()}


def report(ws: Path) -> dict[str, Any]:
    return json.loads((ws / "reports" / "split.json").read_text())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    raw = tmp_path_factory.mktemp("raw")
    return raw, make_dataset(raw, 240)


def test_split_writes_three_coco_files_the_assignments_and_a_report(tmp_path: Path, base) -> None:
    _, dataset = base
    result = run_split(tmp_path / "ws", dataset)
    ws = tmp_path / "ws"
    parts = {s: read_dataset(ws / "data" / "prepared" / f"{s}.json") for s in SPLITS}
    names = [im["file_name"] for part in parts.values() for im in part["images"]]
    assert sorted(names) == sorted(im["file_name"] for im in dataset["images"])  # each image exactly once
    for part in parts.values():
        ids = {im["id"] for im in part["images"]}
        assert all(a["image_id"] in ids for a in part["annotations"])
        assert part["categories"] == dataset["categories"]
    assert sum(len(p["annotations"]) for p in parts.values()) == len(dataset["annotations"])
    rep = report(ws)
    assert rep["images"] == {**{s: len(parts[s]["images"]) for s in SPLITS}, "total": 240}
    assert rep["max_share_deviation_pp"] <= 5.0
    for s, ratio in zip(SPLITS, (0.7, 0.2, 0.1), strict=True):
        assert abs(rep["image_share_pct"][s] - 100 * ratio) < 2
    car = rep["classes"]["car"]
    assert sum(car["boxes"][s] for s in SPLITS) == car["boxes"]["total"]
    assert result.metrics["newly_assigned"] == 240 and result.metrics["kept_from_previous"] == 0
    # Images without boxes are assigned too (the `empty` label spreads them).
    empty = {im["file_name"] for im in dataset["images"]} - {
        im["file_name"] for im in dataset["images"] if any(a["image_id"] == im["id"] for a in dataset["annotations"])
    }
    assert empty and empty <= set(assignments(ws))


def test_same_input_and_seed_give_identical_files(tmp_path: Path, base) -> None:
    _, dataset = base
    run_split(tmp_path / "a", dataset)
    run_split(tmp_path / "b", dataset)
    for rel in [f"data/prepared/{s}.json" for s in SPLITS] + [
        "data/prepared/split_assignments.json",
        "reports/split.json",
    ]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    run_split(tmp_path / "c", dataset, "split.seed=7")
    assert assignments(tmp_path / "c") != assignments(tmp_path / "a")


def test_growing_data_keeps_old_images_in_their_split(tmp_path: Path, base) -> None:
    raw, dataset = base
    ws = tmp_path / "ws"
    run_split(ws, dataset)
    before = assignments(ws)
    extra = make_dataset(raw, 48, seed=1, prefix="new")  # +20 %
    offset = len(dataset["annotations"])
    grown = renumber(
        {
            **dataset,
            # new images first, so every old image also changes its id
            "images": [{**im, "id": im["id"] + 10_000} for im in extra["images"]] + dataset["images"],
            "annotations": [
                {**a, "id": a["id"] + offset, "image_id": a["image_id"] + 10_000} for a in extra["annotations"]
            ]
            + dataset["annotations"],
        }
    )
    result = run_split(ws, grown)
    after = assignments(ws)
    assert all(after[name] == split for name, split in before.items())
    assert len(after) == 288
    assert result.metrics["kept_from_previous"] == 240 and result.metrics["newly_assigned"] == 48
    rep = report(ws)
    assert rep["assignment"]["kept_from_previous"] == 240
    assert rep["max_share_deviation_pp"] <= 5.0
    # New images fill what the ratios still ask for: all three splits get some of them.
    assert {after[im["file_name"]] for im in extra["images"]} == set(SPLITS)


def test_removing_images_moves_no_other_image(tmp_path: Path, base) -> None:
    _, dataset = base
    ws = tmp_path / "ws"
    run_split(ws, dataset)
    before = assignments(ws)
    drop = {im["id"] for im in dataset["images"][::7]}
    shrunk = renumber(
        {
            **dataset,
            "images": [im for im in dataset["images"] if im["id"] not in drop],
            "annotations": [a for a in dataset["annotations"] if a["image_id"] not in drop],
        }
    )
    run_split(ws, shrunk)
    after = assignments(ws)
    assert after == {name: before[name] for name in after}
    assert len(after) == 240 - len(drop)
    assert report(ws)["assignment"]["removed_since_previous"] == len(drop)


def test_a_renamed_file_is_recognised_by_its_content(tmp_path: Path, base) -> None:
    raw, dataset = base
    ws = tmp_path / "ws"
    run_split(ws, dataset)
    before = assignments(ws)
    old = dataset["images"][3]
    shutil.copy(raw / old["file_name"], raw / "images/renamed.png")
    moved = {
        **dataset,
        "images": [{**old, "file_name": "images/renamed.png"}, *dataset["images"][:3], *dataset["images"][4:]],
    }
    run_split(ws, moved, "split.dedup=false")
    assert assignments(ws)["images/renamed.png"] == before[old["file_name"]]


def test_near_duplicates_share_a_split_and_a_new_copy_joins_the_old_one(tmp_path: Path, base) -> None:
    raw, dataset = base
    dataset = json.loads(json.dumps(dataset))
    # Re-encoded, darkened and mirrored copies of image 0 and a resized copy of image 1.
    src0 = Image.open(raw / dataset["images"][0]["file_name"]).convert("RGB")
    src1 = Image.open(raw / dataset["images"][1]["file_name"]).convert("RGB")
    copies = {
        "dups/a.jpg": src0,
        "dups/b.png": src0.point(lambda v: int(v * 0.9)),
        "dups/c.png": src0.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "dups/d.png": src1.resize((128, 128)),
    }
    for k, (name, image) in enumerate(copies.items()):
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(raw / name, quality=90) if name.endswith(".jpg") else image.save(raw / name)
        dataset["images"].append(
            {
                "id": 5000 + k,
                "file_name": name,
                "width": 64,
                "height": 64,
                "sha1": hashlib.sha1((raw / name).read_bytes()).hexdigest(),
            }
        )
    ws = tmp_path / "ws"
    run_split(ws, dataset)
    split = assignments(ws)
    first, second = dataset["images"][0]["file_name"], dataset["images"][1]["file_name"]
    assert split["dups/a.jpg"] == split["dups/b.png"] == split["dups/c.png"] == split[first]
    assert split["dups/d.png"] == split[second]
    groups = report(ws)["groups"]
    assert (groups["largest"], groups["multi_image"], groups["images_in_multi_image_groups"]) == (4, 2, 6)

    # Later, a new copy of an old image arrives: it joins that image's split, whatever the demand.
    target = next(im for im in dataset["images"][2:240] if split[im["file_name"]] == "test")
    Image.open(raw / target["file_name"]).convert("RGB").save(raw / "dups/late.jpg", quality=85)
    late_sha1 = hashlib.sha1((raw / "dups/late.jpg").read_bytes()).hexdigest()
    late = {**target, "id": 9999, "file_name": "dups/late.jpg", "sha1": late_sha1}
    run_split(ws, {**dataset, "images": [*dataset["images"], late]})
    assert assignments(ws)["dups/late.jpg"] == "test"
    assert report(ws)["assignment"]["joined_pinned_group"] == 1


def test_group_by_keeps_frames_of_a_clip_together(tmp_path: Path, base) -> None:
    _, dataset = base
    clips = [{**im, "clip": f"clip{im['id'] % 30}"} for im in dataset["images"]]
    run_split(tmp_path / "ws", {**dataset, "images": clips}, "split.group_by=attr:clip", "split.dedup=false")
    split = assignments(tmp_path / "ws")
    by_clip: dict[str, set[str]] = {}
    for im in clips:
        by_clip.setdefault(im["clip"], set()).add(split[im["file_name"]])
    assert all(len(s) == 1 for s in by_clip.values())
    assert report(tmp_path / "ws")["groups"] == {**report(tmp_path / "ws")["groups"], "count": 30, "largest": 8}


def test_source_splits_are_respected_when_asked(tmp_path: Path, base) -> None:
    _, dataset = base
    tagged = [{**im, "source_split": "test"} if im["id"] <= 60 else im for im in dataset["images"]]
    run_split(tmp_path / "on", {**dataset, "images": tagged}, "split.respect_source_splits=true", "split.dedup=false")
    run_split(tmp_path / "off", {**dataset, "images": tagged}, "split.dedup=false")
    on, off = assignments(tmp_path / "on"), assignments(tmp_path / "off")
    assert all(on[im["file_name"]] == "test" for im in tagged[:60])
    assert any(off[im["file_name"]] != "test" for im in tagged[:60])
    assert report(tmp_path / "on")["assignment"]["from_source_split"] == 60
    # Test already holds 60 of 240 (more than its 10 %): no other image is added to it.
    assert sum(1 for s in on.values() if s == "test") == 60


def test_zero_ratio_split_is_written_empty(tmp_path: Path, base) -> None:
    _, dataset = base
    result = run_split(
        tmp_path / "ws", dataset, "split.train=0.8", "split.val=0.2", "split.test=0", "split.dedup=false"
    )
    assert result.metrics["images_test"] == 0
    assert read_dataset(tmp_path / "ws" / "data/prepared/test.json")["images"] == []
    assert report(tmp_path / "ws")["classes"]["car"]["share_pct"]["test"] is None


def test_empty_dataset_and_too_few_groups_are_data_errors(tmp_path: Path, base) -> None:
    _, dataset = base
    with pytest.raises(DataError, match="no images"):
        run_split(tmp_path / "a", {**dataset, "images": [], "annotations": []})
    two = {**dataset, "images": dataset["images"][:2], "annotations": []}
    with pytest.raises(DataError, match="got no images"):
        run_split(tmp_path / "b", two, "split.dedup=false")
    assert not (tmp_path / "b" / "data/prepared/train.json").exists()  # nothing half-written
    dup = {
        **dataset,
        "images": [dataset["images"][0], {**dataset["images"][1], "file_name": dataset["images"][0]["file_name"]}],
    }
    with pytest.raises(DataError, match="share file_name"):
        run_split(tmp_path / "c", dup, "split.dedup=false")


def test_hashes_are_cached_by_content(tmp_path: Path, base) -> None:
    _, dataset = base
    ws = tmp_path / "ws"
    first = run_split(ws, dataset)
    again = run_split(ws, renumber(dataset))
    assert first.metrics["images_hashed"] == 240 and again.metrics["images_hashed"] == 0
    cache = json.loads((ws / ".cache/detops/phash_cache.json").read_text())
    assert set(cache["hashes"]) == {im["sha1"] for im in dataset["images"]}


def test_pinned_images_that_disagree_keep_their_splits_and_are_reported(tmp_path: Path, base) -> None:
    raw, dataset = base
    first = dataset["images"][0]
    src = Image.open(raw / first["file_name"]).convert("RGB")
    extra = []
    for k, (name, source_split) in enumerate((("pin/test.jpg", "test"), ("pin/free.jpg", None))):
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        src.save(raw / name, quality=80 + k * 10)
        record = {"id": 7000 + k, "file_name": name, "width": 64, "height": 64}
        record["sha1"] = hashlib.sha1((raw / name).read_bytes()).hexdigest()
        extra.append({**record, "source_split": source_split} if source_split else record)
    images = [{**first, "source_split": "train"}, *dataset["images"][1:], *extra]
    result = run_split(tmp_path / "ws", {**dataset, "images": images}, "split.respect_source_splits=true")
    split = assignments(tmp_path / "ws")
    assert (split[first["file_name"]], split["pin/test.jpg"]) == ("train", "test")
    assert split["pin/free.jpg"] == "train"  # a tie between the pinned splits goes to the first split
    assert report(tmp_path / "ws")["groups"]["spanning_splits"] == 1
    assert any("span several splits" in note for note in result.notes)


def test_stable_false_re_splits_from_scratch(tmp_path: Path, base) -> None:
    _, dataset = base
    ws = tmp_path / "ws"
    run_split(ws, dataset, "split.seed=1")
    result = run_split(ws, dataset, "split.stable=false")
    assert result.metrics["kept_from_previous"] == 0
    run_split(tmp_path / "fresh", dataset)
    assert assignments(ws) == assignments(tmp_path / "fresh")


def test_a_fresh_checkout_starts_from_the_registered_assignments(tmp_path: Path, base) -> None:
    """No assignments file here (a run in a new pod): split reads the one logged with the newest registered
    version's training run, so grown data keeps every image it saw in its split; with no registry it splits
    afresh."""
    from mlflow import MlflowClient

    raw, dataset = base
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tmp_path / "first"
    assert run_split(first, dataset, f"mlflow.tracking_uri={store}").metrics["kept_from_previous"] == 0
    client = MlflowClient(store)
    experiment = client.create_experiment("detops", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment)
    for name in SPLITS:  # what `promote` logs with each registered run
        client.log_artifact(run.info.run_id, str(first / "data" / "prepared" / f"{name}.json"), "splits")
    client.create_registered_model("detops-detector")
    client.create_model_version("detops-detector", f"runs:/{run.info.run_id}/splits", run_id=run.info.run_id)

    extra = make_dataset(raw, 48, seed=1, prefix="new")
    offset = len(dataset["annotations"])
    grown = renumber({**dataset, "images": dataset["images"] + [{**im, "id": im["id"] + 10_000}
                                                                 for im in extra["images"]],
                      "annotations": dataset["annotations"] + [
                          {**a, "id": a["id"] + offset, "image_id": a["image_id"] + 10_000}
                          for a in extra["annotations"]]})
    fresh = tmp_path / "fresh"
    result = run_split(fresh, grown, f"mlflow.tracking_uri={store}")
    assert result.metrics["kept_from_previous"] == 240 and result.metrics["newly_assigned"] == 48
    before, after = assignments(first), assignments(fresh)
    assert all(after[name] == split for name, split in before.items())
    assert any("splits logged with version 1 of the registry" in note for note in result.notes), result.notes
    no_store = run_split(tmp_path / "alone", grown)  # the workspace's own store does not exist
    assert no_store.metrics["kept_from_previous"] == 0 and not (tmp_path / "alone" / "mlflow.db").exists()
