"""Step `train`: split files -> models/best.ckpt (EMA weights, best val/map) and models/last.ckpt,
reports/train.json, the training-curves plot, and an MLflow run holding params, metrics and artifacts."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import write_json
from detops.errors import TrainingError
from detops.steps.result import StepResult
from detops.workspace import Workspace

if TYPE_CHECKING:
    from pytorch_lightning.loggers import MLFlowLogger

    from detops.training.callbacks import TrainHistory
    from detops.training.data import ClassMap


def run(ws: Workspace, resume: bool = False, callbacks: Sequence[Any] = ()) -> StepResult:
    """Train (or, with `resume`, continue models/last.ckpt to the same result as an uninterrupted run).

    `callbacks` are extra Lightning callbacks, for library users (and tests that interrupt a run).
    """
    import pytorch_lightning as pl

    from detops.dataset.canonical import read_dataset
    from detops.model.detector import DetectorConfig, check_image_size
    from detops.training.splits import check_splits

    p = ws.params.train
    paths = {split: ws.split_json(split) for split in ("train", "val", "test")}
    train_set, val_set = read_dataset(paths["train"]), read_dataset(paths["val"])
    others = {"test": read_dataset(paths["test"])} if paths["test"].is_file() else {}
    classes = check_splits(train_set, val_set, others, paths)
    check_image_size(p.image_size, tuple(p.strides), p.backbone)
    config = DetectorConfig.from_params(p, len(classes.ids))
    files = ws.outputs("train")
    last_ckpt = files["last"]
    if resume:
        _check_resumable(last_ckpt, config.to_dict(), classes.to_dict())

    with _quiet_lightning():
        pl.seed_everything(p.seed, workers=True, verbose=False)
        module = _module(ws, config.to_dict(), classes, pretrained=False if resume else _pretrained(ws))
        datamodule = _datamodule(ws, train_set, val_set, classes)
        logger = _mlflow_logger(ws, resume)
        from detops.training.callbacks import TrainHistory
        from detops.training.trainer import build_trainer

        history = TrainHistory()
        steps_per_epoch = -(-len(datamodule.train_set) // p.batch_size)
        trainer = build_trainer(p, files["best"], last_ckpt, logger, history, callbacks, steps_per_epoch)
        if trainer.is_global_zero:
            _start_run_record(ws, logger, resume, datamodule.cache_params)
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last_ckpt) if resume else None)
        wall = time.perf_counter() - started
    if not trainer.is_global_zero:
        return StepResult(step="train")
    return _finish(ws, trainer, logger, history, module, wall)


def _check_resumable(last_ckpt: Path, model: dict[str, Any], classes: dict[str, Any]) -> None:
    import torch

    if not last_ckpt.is_file():
        raise TrainingError(f"{last_ckpt}: nothing to resume. Run `detops train` without --resume first.")
    hparams = torch.load(last_ckpt, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    saved = {**hparams.get("model", {}), "classes": hparams.get("classes")}
    wanted = {**model, "classes": classes}
    changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if changed:
        raise TrainingError(
            f"{last_ckpt} was trained with different {', '.join(changed)} than params.yaml / the splits now "
            "give; --resume needs the same model and classes. Run `detops train` without --resume to start over."
        )


def _pretrained(ws: Workspace) -> bool | str:
    value = ws.params.train.pretrained
    return str(ws.resolve(value)) if isinstance(value, str) else value


def _module(ws: Workspace, model: dict[str, Any], classes: ClassMap, pretrained: bool | str) -> Any:
    from detops.training.module import DetectorModule

    p, e = ws.params.train, ws.params.evaluate
    optim = {key: getattr(p, key) for key in ("optimizer", "lr", "min_lr_ratio", "weight_decay", "momentum",
                                              "warmup_epochs", "center_radius")}
    postprocess = {"score_threshold": e.score_threshold, "nms_iou": e.nms_iou, "max_detections": e.max_detections}
    return DetectorModule(model, classes.to_dict(), optim, postprocess, pretrained=pretrained)


def _datamodule(ws: Workspace, train_set: dict[str, Any], val_set: dict[str, Any], classes: ClassMap) -> Any:
    from detops.console import err_console
    from detops.cpus import usable_cpus
    from detops.training.augment import eval_pipeline, train_pipeline
    from detops.training.data import (
        DetectionDataModule,
        DetectionDataset,
        build_records,
        resolve_workers,
    )
    from detops.training.trainer import uses_cuda

    p = ws.params.train
    train = DetectionDataset(build_records(train_set, ws.root, classes), p.image_size,
                             train_pipeline(p.image_size, p.augment), seed=p.seed)
    val = DetectionDataset(build_records(val_set, ws.root, classes), p.image_size, eval_pipeline(p.image_size))
    cache_dir = ws.resolve(p.cache_dir)
    plans = [dataset.cache(name, p.cache_images, cache_dir, p.cache_ram_share, usable_cpus(), err_console().print)
             for name, dataset in (("train", train), ("val", val))]
    # Validation batches are sized like evaluation's: no gradients, so they can be larger than training's.
    datamodule = DetectionDataModule(train, val, p.batch_size, resolve_workers(p.num_workers), uses_cuda(p), p.seed,
                                     val_batch_size=ws.params.evaluate.batch_size)
    datamodule.cache_params = {key: value for plan in plans for key, value in plan.params().items()}
    return datamodule


def _mlflow_logger(ws: Workspace, resume: bool) -> MLFlowLogger:
    from pytorch_lightning.loggers import MLFlowLogger

    from detops import tracking

    tracking.configure(ws)
    run_id = _existing_run(ws) if resume else None
    return MLFlowLogger(experiment_name=ws.params.mlflow.experiment, tracking_uri=tracking.tracking_uri(ws),
                        tags=None if run_id else tracking.provenance(ws), run_id=run_id,
                        artifact_location=tracking.artifact_location(ws))


def _existing_run(ws: Workspace) -> str | None:
    """The run recorded by the interrupted training, if this tracking store still has it."""
    from mlflow.exceptions import MlflowException

    from detops import tracking

    run_id = tracking.read_run_id(ws)
    if not run_id:
        return None
    try:
        tracking.mlflow_client(ws).get_run(run_id)
    except MlflowException:
        return None
    return run_id


def _start_run_record(ws: Workspace, logger: MLFlowLogger, resume: bool, cache_params: dict[str, Any]) -> None:
    """Params (with where the images were cached, and why) and provenance go in at the start, and the run id is
    recorded, so --resume finds the run."""
    from detops import tracking

    run_id = logger.run_id
    if resume and run_id == tracking.read_run_id(ws):
        logger.experiment.set_tag(run_id, "detops.resumed", "true")
    else:
        logger.log_hyperparams({**ws.params.flat(), **cache_params})
        tracking.log_data_inputs(ws, str(run_id))
    write_json(tracking.run_record(ws), {"run_id": run_id})


def _finish(ws: Workspace, trainer: Any, logger: MLFlowLogger, history: TrainHistory, module: Any,
            wall: float) -> StepResult:
    from detops import tracking
    from detops.training.curves import plot_training_curves

    best = history.best()
    files = ws.outputs("train")
    best_ckpt = files["best"]
    if best is None or not best_ckpt.is_file():
        raise TrainingError(
            "no validation epoch finished, so there is no best checkpoint: raise train.max_minutes or train.epochs."
        )
    params_count = sum(p.numel() for p in module.model.parameters())
    # History counts this rank's images; every rank trains on as many.
    images_per_s = history.images * trainer.world_size / history.seconds if history.seconds else 0.0
    stopped = _stop_reason(trainer, len(history.epochs))
    summary = {
        "epochs": len(history.epochs),
        "best_epoch": best["epoch"],
        "val/map": round(best["val/map"], 4),
        "val/map_50": round(best.get("val/map_50", 0.0), 4),
        "train_seconds": round(history.seconds, 1),
        "images_per_second": round(images_per_s, 1),
        "parameters": params_count,
    }
    curves = plot_training_curves(history.epochs, files["curves"])
    metrics_file = write_json(files["metrics"], summary)

    client, run_id = logger.experiment, logger.run_id
    for key in ("train_seconds", "images_per_second", "parameters", "best_epoch"):
        client.log_metric(run_id, f"train/{key}", float(summary[key]))
    client.log_metric(run_id, "best/val_map", float(best["val/map"]))
    client.log_metric(run_id, "best/val_map_50", float(best.get("val/map_50", 0.0)))
    client.log_artifact(run_id, str(best_ckpt), "checkpoints")
    client.log_artifact(run_id, str(curves), "plots")
    client.log_artifact(run_id, str(metrics_file))

    rel = ws.relative
    return StepResult(
        step="train",
        outputs={**{name: rel(path) for name, path in files.items()}, "mlflow_run": rel(tracking.run_record(ws))},
        metrics={"epochs run": summary["epochs"], "best epoch": summary["best_epoch"],
                 "val/map": summary["val/map"], "val/map_50": summary["val/map_50"],
                 "train time": f"{summary['train_seconds']:.1f} s", "images/s": f"{summary['images_per_second']:.1f}",
                 "parameters": f"{params_count / 1e6:.2f}M"},
        notes=[f"stopped at {stopped} after {wall:.0f}s; MLflow run {run_id}"],
    )


def _stop_reason(trainer: Any, epochs: int) -> str:
    from pytorch_lightning.callbacks import EarlyStopping, Timer

    from detops.training.callbacks import FitScheduleToBudget

    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and (callback.time_remaining() or 1) <= 0:
            return "the time limit (train.max_minutes)"
        if isinstance(callback, FitScheduleToBudget) and epochs < callback.cap:
            return f"the time budget (train.max_minutes: schedule fitted to {epochs} epochs)"
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch:
            return "early stopping (train.patience)"
    return f"{epochs} epochs"


@contextmanager
def _quiet_lightning() -> Any:
    """Keep the console to the progress bar and the summary: Lightning's setup chatter is for debugging."""
    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*`isinstance.*treespec.*")
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
