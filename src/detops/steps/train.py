"""Step `train`: split files -> models/best.ckpt (EMA weights, best val/map) and models/last.ckpt,
reports/train.json, the training-curves plot, and an MLflow run holding params, metrics and artifacts."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from detops.atomic import write_json
from detops.errors import TrainingError
from detops.steps.result import StepResult
from detops.workspace import Workspace

if TYPE_CHECKING:
    from pytorch_lightning.loggers import MLFlowLogger

    from detops.training.callbacks import TrainHistory
    from detops.training.data import ClassMap
    from detops.training.resume import ResumePoint


def run(ws: Workspace, resume: bool = False, callbacks: Sequence[Any] = ()) -> StepResult:
    """Train; an interrupted run with the same key (params, data, code, library versions) is gone on from, to
    the same result as an uninterrupted run (`detops.training.resume`). `resume`: refuse to start over.

    `callbacks` are extra Lightning callbacks, for library users (and tests that interrupt a run).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.utilities import rank_zero_only

    from detops.console import err_console
    from detops.dataset.canonical import read_dataset
    from detops.model.detector import DetectorConfig, check_image_size
    from detops.pipeline import fingerprint
    from detops.steps.graph import STEPS
    from detops.training.resume import find_resume_point, restore_best, resume_file
    from detops.training.splits import check_splits

    p = ws.params.train
    paths = {split: ws.split_json(split) for split in ("train", "val", "test")}
    train_set, val_set = read_dataset(paths["train"]), read_dataset(paths["val"])
    others = {"test": read_dataset(paths["test"])} if paths["test"].is_file() else {}
    classes = check_splits(train_set, val_set, others, paths)
    check_image_size(p.image_size, tuple(p.strides), p.backbone)
    config = DetectorConfig.from_params(p, len(classes.ids))
    files = ws.outputs("train")
    key = fingerprint(ws, STEPS["train"])
    first_rank = getattr(rank_zero_only, "rank", 0) == 0  # extra DDP ranks run this too: they only read
    say = err_console().print if first_rank else (lambda _: None)
    store = ws.params.paths.resume_store
    point = find_resume_point(ws.root, key, say, tidy=first_rank, store=store)
    if resume and point is None:
        raise TrainingError(f"{ws.relative(resume_file(ws.root, key))}: nothing to resume (no interrupted training "
                            "with these params, data and code). Run `detops train` without --resume.")
    if point is not None:
        if first_rank:
            restore_best(point, files["best"])
        say(f"resuming the interrupted training from {ws.relative(point.path)}: after step {point.step} "
            f"(epoch {point.epoch + 1})")

    with _quiet_lightning():
        pl.seed_everything(p.seed, workers=True, verbose=False)
        module = _module(ws, config.to_dict(), classes, pretrained=False if point else _pretrained(ws))
        datamodule = _datamodule(ws, train_set, val_set, classes)
        logger = _mlflow_logger(ws, point.run_id if point else None)
        from detops.training.callbacks import TrainHistory
        from detops.training.resume import ResumeCheckpoint
        from detops.training.trainer import build_trainer

        history = TrainHistory()
        steps_per_epoch = -(-len(datamodule.train_set) // p.batch_size)
        saver = ResumeCheckpoint(resume_file(ws.root, key), key, files["best"], p.checkpoint_minutes, store)
        trainer = build_trainer(p, files["best"], saver, logger, history, callbacks, steps_per_epoch)
        if trainer.is_global_zero:
            saver.run_id = _start_run_record(ws, logger, point, datamodule.cache_params)
        started = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(point.path) if point else None)
        wall = time.perf_counter() - started
    if trainer.interrupted:  # Ctrl+C: Lightning stops cleanly; the resume checkpoint stays for the next run
        raise TrainingError(f"training was interrupted; `detops train` or the next flow run goes on from "
                            f"{ws.relative(saver.path)}")
    if not trainer.is_global_zero:
        return StepResult(step="train")
    from detops.training.resume import finish

    finish(saver.path, files["last"], store)
    return _finish(ws, trainer, logger, history, module, wall, point)


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
        local_ranks,
        resolve_workers,
    )
    from detops.training.trainer import uses_cuda

    p = ws.params.train
    train = DetectionDataset(build_records(train_set, ws.root, classes), p.image_size,
                             train_pipeline(p.image_size, p.augment), seed=p.seed)
    val = DetectionDataset(build_records(val_set, ws.root, classes), p.image_size, eval_pipeline(p.image_size))
    cache_dir = ws.resolve(p.cache_dir)
    plans = [dataset.cache(name, p.cache_images, cache_dir, p.cache_ram_share, usable_cpus(), err_console().print,
                           keep=p.cache_keep, ranks=local_ranks(p))
             for name, dataset in (("train", train), ("val", val))]
    # Validation batches are sized like evaluation's: no gradients, so they can be larger than training's.
    datamodule = DetectionDataModule(train, val, p.batch_size, resolve_workers(p.num_workers), uses_cuda(p), p.seed,
                                     val_batch_size=ws.params.evaluate.batch_size)
    datamodule.cache_params = {key: value for plan in plans for key, value in plan.params().items()}
    return datamodule


def _mlflow_logger(ws: Workspace, interrupted_run: str | None) -> MLFlowLogger:
    from pytorch_lightning.loggers import MLFlowLogger

    from detops import tracking

    tracking.configure(ws)
    run_id = _existing_run(ws, interrupted_run)
    return MLFlowLogger(experiment_name=ws.params.mlflow.experiment, tracking_uri=tracking.tracking_uri(ws),
                        tags=None if run_id else tracking.provenance(ws, "train"), run_id=run_id,
                        artifact_location=tracking.artifact_location(ws))


def _existing_run(ws: Workspace, run_id: str | None) -> str | None:
    """The run of the interrupted training, if this tracking store still has it."""
    from mlflow.exceptions import MlflowException

    from detops import tracking

    if not run_id:
        return None
    try:
        tracking.mlflow_client(ws).get_run(run_id)
    except MlflowException:
        return None
    return run_id


def _start_run_record(ws: Workspace, logger: MLFlowLogger, point: ResumePoint | None,
                      cache_params: dict[str, Any]) -> str:
    """Params (with where the images were cached, and why) and provenance go in at the start, and the run id is
    recorded (the declared output `mlflow_run`, and in every resume checkpoint, so a resumed run goes on in it)."""
    from detops import tracking

    run_id = str(logger.run_id)
    if point is not None and run_id == point.run_id:
        logger.experiment.set_tag(run_id, "detops.resumed_after_step", str(point.step))
    else:
        logger.log_hyperparams({**ws.params.flat(), **cache_params})
        tracking.log_data_inputs(ws, run_id)
    write_json(tracking.run_record(ws), {"run_id": run_id})
    return run_id


def _finish(ws: Workspace, trainer: Any, logger: MLFlowLogger, history: TrainHistory, module: Any,
            wall: float, point: ResumePoint | None) -> StepResult:
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
        "processes": trainer.world_size,  # DDP ranks over every device and node
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
        outputs={name: rel(path) for name, path in files.items()},
        metrics={"epochs run": summary["epochs"], "best epoch": summary["best_epoch"],
                 "val/map": summary["val/map"], "val/map_50": summary["val/map_50"],
                 "train time": f"{summary['train_seconds']:.1f} s", "images/s": f"{summary['images_per_second']:.1f}",
                 "parameters": f"{params_count / 1e6:.2f}M"},
        notes=[f"stopped at {stopped} after {wall:.0f}s; MLflow run {run_id}",
               *([f"resumed an interrupted run after step {point.step} (epoch {point.epoch + 1})"] if point else [])],
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
