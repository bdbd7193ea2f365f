"""Step `evaluate` without a trained model: predictions are passed in (or stubbed), outputs checked."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from detops.config import load_params
from detops.errors import DataError
from detops.evaluation.confusion import confusion_counts, confusion_pairs
from detops.evaluation.metrics import coco_metrics
from detops.workspace import Workspace

NAMES = {1: "red cell", 2: "white/cell", 5: "platelet"}  # 5 never appears in the ground truth


def make_workspace(root: Path, overrides: tuple[str, ...] = (), n_images: int = 6) -> tuple[Workspace, dict[str, Any]]:
    """A workspace with small real images on disk and a `test` split file over them."""
    ws = Workspace.at(root, load_params(root / "params.yaml", overrides))
    folder = ws.raw / "tiny"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    images, anns = [], []
    for i in range(n_images):
        width, height = 160, 120
        picture = Image.new("RGB", (width, height), (40, 40, 40))
        draw = ImageDraw.Draw(picture)
        images.append({"id": 10 + i, "file_name": f"img_{i}.png", "width": width, "height": height})
        for _ in range(0 if i == 0 else rng.randint(1, 3)):  # image 0: no truth
            w, h = rng.randint(12, 60), rng.randint(12, 50)
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            cat = rng.choice([1, 2])
            draw.rectangle([x, y, x + w, y + h], fill=(200, 30, 30) if cat == 1 else (230, 230, 230))
            anns.append({"id": len(anns) + 1, "image_id": 10 + i, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
        picture.save(folder / f"img_{i}.png")
    gt = {"info": {"root": ws.relative(folder)}, "images": images, "annotations": anns,
          "categories": [{"id": c, "name": n, "supercategory": ""} for c, n in NAMES.items()]}
    ws.split_json("test").parent.mkdir(parents=True, exist_ok=True)
    ws.split_json("test").write_text(json.dumps(gt), encoding="utf-8")
    return ws, gt


def jittered_predictions(gt: dict[str, Any], seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    preds = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        preds.append({"image_id": ann["image_id"], "category_id": ann["category_id"] if rng.random() < 0.8 else 5,
                      "bbox": [x + rng.uniform(-3, 3), y + rng.uniform(-3, 3), w, h], "score": rng.uniform(0.2, 1)})
    preds.append({"image_id": 10, "category_id": 1, "bbox": [5, 5, 30, 30], "score": 0.95})  # on the empty image
    return preds


def test_confusion_matrix_on_a_hand_made_case() -> None:
    names = {1: "a", 2: "b", 3: "c"}
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},      # found as a
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10]},    # found, but as a
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20]},      # missed
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.9},    # correct
        {"image_id": 1, "category_id": 1, "bbox": [50, 51, 10, 10], "score": 0.8},  # wrong class
        {"image_id": 1, "category_id": 1, "bbox": [0, 1, 10, 10], "score": 0.7},    # duplicate -> false positive
        {"image_id": 2, "category_id": 2, "bbox": [60, 60, 10, 10], "score": 0.6},  # nothing there -> false positive
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 20, 20], "score": 0.1},    # below the score threshold
    ]
    pairs = confusion_pairs(gt, dets, names, score_threshold=0.3, iou=0.5)
    assert sorted(pairs) == sorted([("a", "a"), ("b", "a"), ("background", "a"), ("background", "b"),
                                    ("c", "background")])
    labels = ["a", "b", "c", "background"]
    assert confusion_counts(pairs, labels) == [
        [1, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 1],
        [1, 1, 0, 0],
    ]
    # With a lower threshold the low-score detection finds the missed box.
    assert ("c", "c") in confusion_pairs(gt, dets, names, score_threshold=0.05, iou=0.5)


def test_evaluate_predictions_writes_every_output(workspace: Path) -> None:
    from detops.steps.evaluate import evaluate_predictions

    ws, gt = make_workspace(workspace, ("evaluate.num_sample_images=4",))
    preds = jittered_predictions(gt)
    evaluation = evaluate_predictions(ws, gt, preds)

    metrics = json.loads((ws.reports / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == coco_metrics(gt, preds, prefix="test") == evaluation.metrics
    assert 0 < metrics["test/map"] < 1
    assert metrics["test/ap/platelet"] is None  # predicted but never true: undefined, not 0
    assert set(metrics) >= {"test/map", "test/map_50", "test/map_75", "test/mar_100", "test/ap/red cell",
                            "test/ap/white_cell"}
    assert any("platelet" in note for note in evaluation.notes)

    plots = ws.reports / "plots"
    for name in ("pr_curves.png", "confusion.png", "predictions.png"):
        with Image.open(plots / name) as png:
            png.verify()
            assert png.format == "PNG"
    with Image.open(plots / "predictions.png") as png:
        assert png.width > 600 and png.height > 400  # a 2x2 grid, not the "nothing to draw" message

    with (plots / "pr_curves.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["class", "recall", "precision"]
    assert {r["class"] for r in rows} == {"red cell", "white/cell"}
    assert len(rows) == 2 * 101
    assert all(0.0 <= float(r["precision"]) <= 1.0 for r in rows)

    with (plots / "confusion.csv").open(encoding="utf-8") as handle:
        pairs = list(csv.DictReader(handle))
    assert list(pairs[0]) == ["actual", "predicted"]
    kept = [p for p in preds if p["score"] >= ws.params.evaluate.plot_score_threshold]
    missed = sum(1 for p in pairs if p["predicted"] == "background")
    assert len(pairs) == len(kept) + missed  # every kept detection once, plus each missed true box
    assert sum(1 for p in pairs if p["actual"] != "background") == len(gt["annotations"])

    report = json.loads((ws.reports / "evaluation.json").read_text(encoding="utf-8"))
    assert report["images"] == 6 and report["true_boxes"] == len(gt["annotations"])
    assert [c["name"] for c in report["classes"]] == ["red cell", "white/cell", "platelet"]
    assert report["confusion"]["labels"][-1] == "background"
    detections = json.loads((ws.reports / "detections.json").read_text(encoding="utf-8"))
    assert len(detections) == len(preds)
    assert not list(ws.reports.rglob("*.tmp"))


def test_unknown_image_id_is_a_data_error_and_writes_nothing(workspace: Path) -> None:
    from detops.steps.evaluate import evaluate_predictions

    ws, gt = make_workspace(workspace)
    bad = [*jittered_predictions(gt), {"image_id": 4242, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]
    with pytest.raises(DataError, match="image_id 4242"):
        evaluate_predictions(ws, gt, bad)
    assert not (ws.reports / "metrics.json").exists()


def test_missing_split_and_missing_checkpoint(workspace: Path) -> None:
    from detops.steps import evaluate

    ws = Workspace.at(workspace, load_params(workspace / "params.yaml", ("evaluate.split=val",)))
    with pytest.raises(DataError, match=r"val\.json.*detops split"):
        evaluate.run(ws)
    ws, gt = make_workspace(workspace)
    ws.split_json("test").write_text(json.dumps({**gt, "images": [], "annotations": []}), encoding="utf-8")
    with pytest.raises(DataError, match="no images"):
        evaluate.run(ws)
    ws.split_json("test").write_text(json.dumps(gt), encoding="utf-8")
    with pytest.raises(DataError, match=r"checkpoint not found\. Run `detops train` first"):
        evaluate.run(ws)
    ws.models.mkdir(parents=True)
    resume = ws.root / ".detops/resume/key.ckpt"  # an interrupted training: evaluate does not go on from it
    resume.parent.mkdir(parents=True)
    resume.write_bytes(b"x")
    with pytest.raises(DataError, match=r"best\.ckpt: checkpoint not found\. \.detops/resume holds a checkpoint"):
        evaluate.run(ws)


def test_empty_grid_still_writes_a_png(workspace: Path) -> None:
    from detops.steps.evaluate import evaluate_predictions

    ws, gt = make_workspace(workspace, ("evaluate.num_sample_images=0",))
    evaluate_predictions(ws, gt, [])
    with Image.open(ws.reports / "plots" / "predictions.png") as png:
        assert png.format == "PNG"
    metrics = json.loads((ws.reports / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test/map"] == 0.0 and metrics["test/ap/platelet"] is None


@pytest.fixture
def local_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's workspace holds its own SQLite store, whatever the developer's environment says."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.usefixtures("local_mlflow")
def test_logs_into_the_recorded_training_run(workspace: Path) -> None:
    import mlflow

    from detops.evaluation.mlflow_log import log_evaluation
    from detops.steps.evaluate import evaluate_predictions
    from detops.tracking import configure, run_record, tracking_uri

    ws, gt = make_workspace(workspace)
    configure(ws)
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_metric("val/map", 0.5, step=3)
    run_record(ws).parent.mkdir(parents=True, exist_ok=True)
    run_record(ws).write_text(json.dumps({"run_id": run.info.run_id}), encoding="utf-8")

    evaluation = evaluate_predictions(ws, gt, jittered_predictions(gt))
    files = evaluation.files
    logged = log_evaluation(ws, evaluation.metrics, {"plots": [files["pr_curves"], files["confusion_data"]],
                                                     "evaluation": [files["metrics"]]})
    assert logged.reused and logged.run_id == run.info.run_id

    client = mlflow.MlflowClient(tracking_uri(ws))
    data = client.get_run(run.info.run_id).data
    assert data.metrics["val/map"] == 0.5  # the training run's own metrics are still there
    assert data.metrics["test/map"] == pytest.approx(evaluation.metrics["test/map"])
    assert data.metrics["test/ap/white_cell"] == pytest.approx(evaluation.metrics["test/ap/white_cell"])
    assert "test/ap/platelet" not in data.metrics  # undefined: not logged as 0 or -1
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert listed == {"plots/pr_curves.png", "plots/confusion.csv"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")] == ["evaluation/metrics.json"]


@pytest.mark.usefixtures("local_mlflow")
def test_run_step_with_a_stub_predictor(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step wiring: split + checkpoint -> the scorer -> outputs, a new MLflow run, a StepResult."""
    import mlflow

    from detops.evaluation.scorer import Score, Scorer
    from detops.steps import evaluate
    from detops.tracking import run_record, tracking_uri

    ws, gt = make_workspace(workspace)
    ws.models.mkdir(parents=True)
    (ws.models / "best.ckpt").write_bytes(b"stub")
    calls: list[tuple[Path, int]] = []

    def score(self: Scorer, artifact: Path, **_: Any) -> Score:
        calls.append((artifact, len(self.gt["images"])))
        return self.measure(jittered_predictions(self.gt))

    monkeypatch.setattr(Scorer, "score", score)

    run_record(ws).parent.mkdir(parents=True, exist_ok=True)
    run_record(ws).write_text(json.dumps({"run_id": "0123456789abcdef"}), encoding="utf-8")  # not in this store

    result = evaluate.run(ws)
    assert any("0123456789abcdef" in note and "is not in" in note for note in result.notes)
    assert calls == [(ws.models / "best.ckpt", len(gt["images"]))]
    assert list(result.metrics) == ["test/map", "test/map_50", "test/map_75", "test/mar_100"]
    assert result.metrics["test/map"] == coco_metrics(gt, jittered_predictions(gt))["test/map"]
    assert result.outputs["metrics"] == "reports/metrics.json"
    assert all((ws.root / path).is_file() for path in result.outputs.values())
    run_id = next(note for note in result.notes if "new MLflow run" in note).split("run ")[1].split()[0]
    run = mlflow.MlflowClient(tracking_uri(ws)).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["evaluate.split"] == "test"
    assert run.data.metrics["test/map_50"] == pytest.approx(result.metrics["test/map_50"])


@pytest.mark.slow
@pytest.mark.usefixtures("local_mlflow")
def test_evaluate_a_tiny_trained_model(workspace: Path) -> None:
    """Real checkpoint -> predict_dataset -> evaluate, logged into the run `train` recorded."""
    import mlflow
    import torch

    from detops.steps import evaluate
    from detops.tracking import configure, run_record, tracking_uri
    from detops.training.augment import eval_pipeline
    from detops.training.data import ClassMap, DetectionDataset, build_records, make_loader
    from detops.training.module import DetectorModule

    ws, gt = make_workspace(workspace, ("evaluate.num_sample_images=4",), n_images=8)
    classes = ClassMap.from_dataset(gt)
    size = 64
    module = DetectorModule(
        model={"backbone": "resnet18", "num_classes": len(classes.ids), "image_size": size, "strides": [8, 16, 32],
               "fpn_channels": 16, "head_convs": 1},
        classes=classes.to_dict(),
        optim={"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0, "momentum": 0.9, "warmup_epochs": 0.0,
               "min_lr_ratio": 0.1, "center_radius": 1.5},
        postprocess={"score_threshold": 0.05, "nms_iou": 0.6, "max_detections": 100},
    )
    loader = make_loader(DetectionDataset(build_records(gt, ws.root, classes), size, eval_pipeline(size)),
                         batch_size=4, num_workers=0, pin_memory=False, shuffle=True)
    # A few plain optimizer steps (the train step owns the Lightning loop); the checkpoint holds what
    # a Lightning checkpoint holds for inference: hyper_parameters and the module's state_dict.
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    for _ in range(3):
        for batch in loader:
            loss = module.criterion(module(batch["images"].float() / 255.0), batch["boxes"], batch["labels"])["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    ws.models.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, ws.models / "best.ckpt")
    configure(ws)
    with mlflow.start_run(run_name="train") as run:
        mlflow.log_metric("val/map", 0.0)
    run_record(ws).parent.mkdir(parents=True, exist_ok=True)
    run_record(ws).write_text(json.dumps({"run_id": run.info.run_id}), encoding="utf-8")

    result = evaluate.run(ws)

    detections = json.loads((ws.reports / "detections.json").read_text(encoding="utf-8"))
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    assert detections, "an untrained head still scores boxes above evaluate.score_threshold"
    for det in detections:
        assert det["category_id"] in NAMES  # original ids, not contiguous labels
        x, y, w, h = det["bbox"]
        width, height = sizes[det["image_id"]]
        assert min(x, y) >= -0.5 and x + w <= width + 0.5 and y + h <= height + 0.5  # original pixels
    metrics = json.loads((ws.reports / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == coco_metrics(gt, detections, prefix="test")
    assert 0.0 <= metrics["test/map"] <= 1.0 and metrics["test/ap/platelet"] is None
    assert result.metrics["test/map"] == metrics["test/map"]
    logged = mlflow.MlflowClient(tracking_uri(ws)).get_run(run.info.run_id).data.metrics
    assert logged["test/map"] == pytest.approx(metrics["test/map"]) and "val/map" in logged
