"""The Lightning Trainer as params say: precision, devices, time budget, checkpoints, EMA, early stopping."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

from detops.config.train import TrainParams
from detops.console import err_console
from detops.training.callbacks import EMA, FitScheduleToBudget, TrainHistory
from detops.training.resume import AtomicCheckpointIO, RelocatableCheckpoint, ResumeCheckpoint

MONITOR = "val/map"


class ProgressBar(RichProgressBar):
    """Rich bar with the running loss and the latest val/map; no logger version number."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def resolve_precision(params: TrainParams) -> str:
    """auto: bf16-mixed on a GPU that has it, fp16-mixed on older GPUs, full fp32 on CPU."""
    if params.precision != "auto":
        return params.precision if params.precision != "32" else "32-true"
    if params.accelerator != "cpu" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def uses_cuda(params: TrainParams) -> bool:
    return params.accelerator != "cpu" and torch.cuda.is_available()


def best_checkpoint(best: Path) -> ModelCheckpoint:
    """`best` (best.ckpt): weights only (EMA in `state_dict`), by val/map. Lightning adds the `.ckpt` suffix."""
    return RelocatableCheckpoint(dirpath=best.parent, filename=best.name.removesuffix(ModelCheckpoint.FILE_EXTENSION),
                           monitor=MONITOR, mode="max", save_top_k=1, save_weights_only=True,
                           auto_insert_metric_name=False, enable_version_counter=False)


def check_launcher(params: TrainParams) -> None:
    """Several nodes need a launcher that started this process as one of them (torchrun, SLURM, LSF, MPI: the
    environments Lightning detects its rank from); without one, the first rank would wait for the others for ever."""
    if params.num_nodes == 1:
        return
    from pytorch_lightning.plugins.environments import (
        LSFEnvironment,
        MPIEnvironment,
        SLURMEnvironment,
        TorchElasticEnvironment,
    )

    if not any(env.detect() for env in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment)):
        from detops.errors import TrainingError

        raise TrainingError(
            f"train.num_nodes is {params.num_nodes}, but no launcher started this process as one of the nodes. Run "
            f"`torchrun --nnodes {params.num_nodes} --node-rank <i> --nproc-per-node <devices> --master-addr <node 0> "
            "--master-port 29500 -m detops train` on each node (README: On a cluster), or set train.num_nodes=1.")


def build_trainer(params: TrainParams, best: Path, resume: ResumeCheckpoint, logger: Any, history: TrainHistory,
                  extra_callbacks: Sequence[pl.Callback] = (), steps_per_epoch: int = 50) -> pl.Trainer:
    """`resume` (the full state, `detops.training.resume`) comes after `best` among the checkpoints, which
    Lightning runs last and in order: each resume checkpoint holds the best checkpoint's state of its epoch."""
    check_launcher(params)
    bar = ProgressBar(leave=False, console_kwargs={"file": err_console().file})  # the terminal, not the step's log
    callbacks: list[pl.Callback] = [best_checkpoint(best), resume, history, bar]
    if params.ema:
        callbacks.append(EMA(params.ema_decay))
    if params.max_minutes:
        callbacks.append(FitScheduleToBudget(params.max_minutes))
    if params.patience:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="max", patience=params.patience,
                                       check_on_train_epoch_end=False))
    callbacks.extend(extra_callbacks)
    return pl.Trainer(
        max_epochs=params.epochs,
        max_time=timedelta(minutes=params.max_minutes) if params.max_minutes else None,
        accelerator=params.accelerator,
        devices=params.devices,
        num_nodes=params.num_nodes,
        strategy=params.strategy,
        precision=resolve_precision(params),  # type: ignore[arg-type]
        gradient_clip_val=params.grad_clip or None,
        callbacks=callbacks,
        logger=logger,
        log_every_n_steps=max(1, min(50, steps_per_epoch)),
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=str(best.parent),
        plugins=[AtomicCheckpointIO()],
    )


def starts_processes(params: TrainParams) -> bool:
    """Whether Lightning will train on several devices, starting one process per extra device that re-runs the
    current program. Inside a flow that would re-run the whole flow, so the flow trains through the CLI then."""
    if params.devices != "auto":
        return params.devices > 1 or params.devices == -1
    return params.accelerator != "cpu" and torch.cuda.device_count() > 1
