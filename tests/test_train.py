"""The `train` step end to end on a tiny synthetic dataset: checkpoints, reports, MLflow, exact resume,
inference in original pixels, and every bad input it must refuse with a TrainingError."""

from __future__ import annotations

import json
import shutil
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw

from detops.config import load_params
from detops.dataset.canonical import read_dataset, subset, write_dataset
from detops.errors import TrainingError
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
CATEGORIES = [{"id": 3, "name": "box"}, {"id": 7, "name": "disc"}]  # non-contiguous ids on purpose
TINY = [
    "train.backbone=test_resnet", "train.fpn_channels=16", "train.head_convs=1", "train.image_size=64",
    "train.batch_size=4", "train.epochs=3", "train.num_workers=0", "train.patience=0", "train.lr=0.01",
    "train.warmup_epochs=0.5", "evaluate.batch_size=4",
]


def write_tiny_dataset(root: Path, n_images: int = 14, seed: int = 0) -> dict[str, Any]:
    """Rectangles (id 3) and ellipses (id 7) on noise; some images are not square."""
    rng = np.random.default_rng(seed)
    image_dir = root / "data" / "raw" / "tiny" / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        w, h = [(64, 64), (96, 56), (48, 80)][i % 3]
        pixels = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
        img = Image.fromarray(pixels)
        draw = ImageDraw.Draw(img)
        for j in range(1 + i % 2):
            cat = CATEGORIES[(i + j) % 2]["id"]
            bw, bh = int(rng.integers(12, w // 2)), int(rng.integers(12, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            shape = draw.rectangle if cat == 3 else draw.ellipse
            shape([x, y, x + bw - 1, y + bh - 1], fill=(230, 200, 40) if cat == 3 else (40, 200, 230))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        img.save(image_dir / f"{i:03d}.png")
        images.append({"id": i + 1, "file_name": f"images/{i:03d}.png", "width": w, "height": h})
    return {"info": {"root": "data/raw/tiny"}, "images": images, "annotations": annotations,
            "categories": CATEGORIES}


def make_workspace(root: Path, *overrides: str, splits: tuple[int, int] = (8, 11)) -> Workspace:
    """Workspace with the repo's params + `TINY` + overrides, and train/val/test split files."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    ws = Workspace.at(root, load_params(root / "params.yaml", [*TINY, *overrides]))
    dataset = write_tiny_dataset(root)
    ids = [im["id"] for im in dataset["images"]]
    a, b = splits
    for name, part in (("train", ids[:a]), ("val", ids[a:b]), ("test", ids[b:])):
        write_dataset(ws.split_json(name), subset(dataset, part))
    return ws


def run_train(ws: Workspace, **kwargs: Any) -> Any:
    from detops.steps import train

    return train.run(ws, **kwargs)


class Preempt(pl.Callback):
    """Simulates a killed run: raises at the start of batch `batch` of epoch `epoch` (0-based), as a preempted
    machine stops a run mid-way (what was saved before stays, nothing after)."""

    def __init__(self, epoch: int, batch: int = 0) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("preempted")


def resume_files(ws: Workspace) -> list[Path]:
    from detops.workspace import RESUME_DIR

    return sorted((ws.root / RESUME_DIR).glob("*.ckpt"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Any]:
    ws = make_workspace(tmp_path_factory.mktemp("straight"))
    return ws, run_train(ws)


def _state(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {"ema": ckpt["state_dict"], "current": ckpt["current_model_state"]}


@pytest.mark.slow
def test_train_writes_checkpoints_reports_and_an_mlflow_run(trained: tuple[Workspace, Any]) -> None:
    from mlflow import MlflowClient

    from detops import tracking

    ws, result = trained
    for name in ("best", "last", "metrics", "curves", "mlflow_run"):
        assert (ws.root / result.outputs[name]).is_file(), name
    summary = json.loads((ws.reports / "train.json").read_text())
    assert summary["epochs"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert 0 <= summary["val/map"] <= 1 and summary["images_per_second"] > 0 and summary["parameters"] > 0
    best = torch.load(ws.models / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["hyper_parameters"]["classes"] == {"ids": [3, 7], "names": ["box", "disc"]}
    assert "optimizer_states" not in best  # best is weights only; last has the full state for --resume
    assert "optimizer_states" in torch.load(ws.models / "last.ckpt", map_location="cpu", weights_only=True)

    run_id = tracking.read_run_id(ws)
    client = MlflowClient(tracking.tracking_uri(ws))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.backbone"] == "test_resnet" and run.data.params["train.image_size"] == "64"
    assert len(client.get_metric_history(run_id, "val/map")) == 3
    assert {"train/loss", "val/map_50", "best/val_map", "train/images_per_second"} <= set(run.data.metrics)
    assert run.data.tags["git.commit"] and run.data.tags["version.torch"] == metadata.version("torch")
    assert run.data.tags["data.train_hash"]
    artifacts = {a.path for folder in ("checkpoints", "plots", "") for a in client.list_artifacts(run_id, folder)}
    assert {"checkpoints/best.ckpt", "plots/training_curves.png", "train.json"} <= artifacts


@pytest.mark.slow
def test_best_checkpoint_holds_the_ema_weights(trained: tuple[Workspace, Any]) -> None:
    ws, _ = trained
    state = _state(ws.models / "last.ckpt")
    differs = [k for k, v in state["ema"].items() if v.is_floating_point() and not torch.equal(v, state["current"][k])]
    assert differs, "EMA weights should differ from the raw weights after training"


def _same_state(expected: Path, got: Path) -> None:
    want, have = _state(expected), _state(got)
    for kind in ("ema", "current"):
        assert want[kind].keys() == have[kind].keys()
        for key, value in want[kind].items():
            assert torch.equal(value, have[kind][key]), (kind, key)  # bit-identical on the CPU


@pytest.mark.slow
@pytest.mark.parametrize(("where", "overrides"), [
    ("epoch end", ()),  # killed at the start of the third epoch: goes on from the end of the second
    ("mid-epoch", ("train.checkpoint_minutes=1e-9",)),  # a time-based checkpoint after every batch
])
def test_an_interrupted_run_goes_on_to_the_same_weights_as_an_uninterrupted_one(
    trained: tuple[Workspace, Any], tmp_path: Path, where: str, overrides: tuple[str, ...]
) -> None:
    from detops import tracking

    straight_ws, _ = trained
    ws = make_workspace(tmp_path / "resumed", *overrides)
    with pytest.raises(RuntimeError, match="preempted"):
        run_train(ws, callbacks=[Preempt(epoch=2, batch=0) if where == "epoch end" else Preempt(epoch=1, batch=1)])
    saved = resume_files(ws)
    assert [p.name.endswith(".best-weights.ckpt") for p in saved] == [True, False]  # the best weights beside the state
    stopped = torch.load(saved[1], map_location="cpu", weights_only=True)
    step = 4 if where == "epoch end" else 3  # 2 batches an epoch
    assert (stopped["epoch"], stopped["global_step"]) == (1, step)
    run_id = tracking.read_run_id(ws)
    (ws.models / "best.ckpt").unlink()  # what `dvc repro` does to the stage's outputs before it runs it
    (ws.reports / "mlflow_run.json").unlink()
    result = run_train(ws)

    _same_state(straight_ws.models / "last.ckpt", ws.models / "last.ckpt")
    best, want = (torch.load(d.models / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
                  for d in (ws, straight_ws))
    assert best.keys() == want.keys() and all(torch.equal(best[k], want[k]) for k in want)
    assert resume_files(ws) == []  # a completed run leaves no resume checkpoint
    assert tracking.read_run_id(ws) == run_id  # the resumed run goes on in the same MLflow run
    assert f"resumed an interrupted run after step {step} (epoch 2)" in result.notes[1]
    from mlflow import MlflowClient

    run = MlflowClient(tracking.tracking_uri(ws)).get_run(run_id)
    assert run.data.tags["detops.resumed_after_step"] == str(step) and run.info.status == "FINISHED"
    summary = json.loads((ws.reports / "train.json").read_text())
    assert summary["epochs"] == 3 and summary == {
        **json.loads((straight_ws.reports / "train.json").read_text()),
        **{k: summary[k] for k in ("train_seconds", "images_per_second")}}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_run_on_a_fresh_disk_resumes_from_the_resume_store(trained: tuple[Workspace, Any], tmp_path: Path,
                                                             kind: str, request: pytest.FixtureRequest) -> None:
    """paths.resume_store: a pod killed mid-training, a new pod with an empty disk (and the same MLflow server) goes
    on from the checkpoint the first one copied to the store, to the weights of an uninterrupted run; a completed
    run leaves nothing in the store. On a folder (file://) and on S3 (moto's server on loopback)."""
    from fsspec.core import url_to_fs

    straight_ws, _ = trained
    store = (tmp_path / "store").as_uri() if kind == "file" else f"{request.getfixturevalue('s3')}/{tmp_path.name}"
    fs, prefix = url_to_fs(store, skip_instance_cache=True)

    def stored() -> dict[str, bytes]:
        fs.invalidate_cache()  # s3fs caches listings: read the bucket as it is now
        return {Path(p).name: fs.cat_file(p) for p in fs.ls(prefix, detail=False)} if fs.exists(prefix) else {}

    shared = [f"paths.resume_store={store}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    first = make_workspace(tmp_path / "pod-1", *shared)
    with pytest.raises(RuntimeError, match="preempted"):
        run_train(first, callbacks=[Preempt(epoch=2, batch=0)])
    [kept] = [p for p in resume_files(first) if not p.name.endswith(".best-weights.ckpt")]
    copies = stored()
    assert sorted(copies) == [kept.name.replace(".ckpt", ".best-weights.ckpt"), kept.name]
    assert copies[kept.name] == kept.read_bytes()  # the epoch-end checkpoint, copied as written

    second = make_workspace(tmp_path / "pod-2", *shared)  # nothing of the first pod's disk
    assert resume_files(second) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_train(second)
    # Lightning drops a checkpoint callback's best score when its folder's path changed: ours follow the workspace
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert "resumed an interrupted run after step 4 (epoch 2)" in result.notes[1]
    _same_state(straight_ws.models / "last.ckpt", second.models / "last.ckpt")
    best, want = (torch.load(d.models / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
                  for d in (second, straight_ws))
    assert all(torch.equal(best[k], want[k]) for k in want)
    assert stored() == {} and resume_files(second) == []


@pytest.mark.slow
def test_a_checkpoint_of_other_params_is_set_aside_and_a_half_written_one_removed(tmp_path: Path) -> None:
    from detops.workspace import RESUME_DIR

    ws = make_workspace(tmp_path / "ws", "train.epochs=2")
    with pytest.raises(RuntimeError, match="preempted"):
        run_train(ws, callbacks=[Preempt(epoch=1)])
    (ws.root / RESUME_DIR / ".x.ckpt.abc.tmp").write_bytes(b"half a checkpoint")  # a kill during a write
    changed = Workspace.at(ws.root, load_params(ws.root / "params.yaml", [*TINY, "train.epochs=2", "train.lr=0.02"]))
    result = run_train(changed)
    assert len(result.notes) == 1  # started over: no "resumed" note
    aside = sorted(p.name for p in (ws.root / RESUME_DIR / "set-aside").iterdir())
    assert len(aside) == 2 and not list((ws.root / RESUME_DIR).glob(".*.tmp"))
    assert resume_files(ws) == []


@pytest.mark.slow
def test_predict_dataset_returns_coco_results_in_original_pixels(trained: tuple[Workspace, Any]) -> None:
    from detops.inference.dataset import predict_dataset
    from detops.inference.loading import evaluation_thresholds, load_predictor
    from detops.training.predict import load_detector

    ws, _ = trained
    test = read_dataset(ws.split_json("test"))
    predictor = load_predictor(ws.models / "best.ckpt", evaluation_thresholds(ws.params.evaluate))
    results = predict_dataset(predictor, test, ws.root, batch_size=4)
    sizes = {im["id"]: (im["width"], im["height"]) for im in test["images"]}
    assert results and {r["category_id"] for r in results} <= {3, 7}
    for r in results:
        w, h = sizes[r["image_id"]]
        x, y, bw, bh = r["bbox"]
        assert x >= 0 and y >= 0 and bw > 0 and bh > 0 and x + bw <= w + 0.01 and y + bh <= h + 0.01
        assert 0 < r["score"] <= 1
    per_image = max(sum(r["image_id"] == i for r in results) for i in sizes)
    assert per_image <= ws.params.evaluate.max_detections
    model, meta = load_detector(ws.models / "best.ckpt")
    assert not model.training and meta["class_ids"] == [3, 7] and meta["image_size"] == 64


@pytest.mark.parametrize(
    ("budget", "elapsed", "done", "cap", "expected"),
    [
        (60, 10, 1, 1000, 6),  # 10 s per epoch: six fit in a minute
        (60, 10, 1, 4, 4),  # never more than train.epochs
        (60, 70, 5, 1000, 5),  # over budget: stop where we are, never plan fewer than done
        (60, 0, 0, 30, 30),  # no pace yet
    ],
)
def test_epochs_within_the_budget(budget: float, elapsed: float, done: int, cap: int, expected: int) -> None:
    from detops.training.callbacks import epochs_within

    assert epochs_within(budget, elapsed, done, cap) == expected


@pytest.mark.slow
def test_time_budget_fits_the_schedule_so_the_lr_has_decayed_at_the_end(tmp_path: Path) -> None:
    """A huge train.epochs with a short budget: without the refit, the cosine would span 10,000 epochs and the
    run would be cut at its peak LR."""
    ws = make_workspace(tmp_path / "ws", "train.epochs=10000", "train.max_minutes=0.15", "train.ema=false")
    result = run_train(ws)
    history = torch.load(ws.models / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    epochs = next(v for k, v in history.items() if "TrainHistory" in k)["epochs"]
    assert 2 <= len(epochs) < 10000
    assert epochs[-1]["lr"] < 0.5 * ws.params.train.lr, [round(e["lr"], 5) for e in epochs]
    assert "time budget" in result.notes[0]


def test_empty_train_split_is_refused(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", splits=(0, 10))
    with pytest.raises(TrainingError, match="train split has no images"):
        run_train(ws)


def test_category_without_train_boxes_is_named(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    train = read_dataset(ws.split_json("train"))
    train["annotations"] = [a for a in train["annotations"] if a["category_id"] != 7]
    write_dataset(ws.split_json("train"), train)
    with pytest.raises(TrainingError, match=r"category 'disc' \(id 7\) has \d+ boxes in val"):
        run_train(ws)


def test_image_size_not_divisible_by_the_stride_is_refused_before_training(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", "train.image_size=250")
    with pytest.raises(TrainingError, match="250 is not divisible by 32"):
        run_train(ws)
    assert not (ws.models / "last.ckpt").exists()


def test_resume_without_an_interrupted_run_is_refused(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    with pytest.raises(TrainingError, match="nothing to resume"):
        run_train(ws, resume=True)


class PoisonWeights(pl.Callback):
    """Makes the loss NaN at the second step, as a diverging run would."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == 1:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


@pytest.mark.slow
def test_nan_loss_stops_training_naming_epoch_step_and_lr(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", "train.epochs=1")
    with pytest.raises(TrainingError, match=r"epoch 0, step 1.*Lower train\.lr"):
        run_train(ws, callbacks=[PoisonWeights()])


def test_cli_prints_the_error_without_a_traceback(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from detops.cli import app

    ws = make_workspace(tmp_path / "ws", splits=(0, 10))
    sets = [arg for override in TINY for arg in ("--set", override)]
    result = CliRunner().invoke(app, ["--workspace", str(ws.root), *sets, "train"])
    assert result.exit_code == 2
    assert "train split has no images" in result.output and "Traceback" not in result.output


class RecordDevices(pl.Callback):
    """Where the weights, their EMA and a batch's images live once training runs."""

    def __init__(self) -> None:
        self.devices: dict[str, str] = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        from detops.training.callbacks import EMA

        ema = next(c for c in trainer.callbacks if isinstance(c, EMA))  # type: ignore[attr-defined]
        self.devices = {
            "weights": next(pl_module.parameters()).device.type,
            "ema": next(ema._average_model.parameters()).device.type,  # type: ignore[union-attr]
            "images": batch["images"].device.type,
            "precision": str(trainer.precision),
        }


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_training_keeps_weights_ema_and_batches_on_the_gpu_in_bf16(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", "train.epochs=1", "train.accelerator=gpu", "train.devices=1")
    recorder = RecordDevices()
    result = run_train(ws, callbacks=[recorder])
    assert recorder.devices == {"weights": "cuda", "ema": "cuda", "images": "cuda", "precision": "bf16-mixed"}
    assert float(result.metrics["val/map"]) >= 0
