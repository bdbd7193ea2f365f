"""Training callbacks: EMA of the weights (Lightning's WeightAveraging), a schedule fitted to the time
budget, and per-epoch history."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer, WeightAveraging


class RampedEmaFn:
    """EMA update with decay min(decay, (1 + n) / (10 + n)) after n updates.

    A fixed 0.999 would keep most of the random init after a few hundred steps (a short CPU run); the
    ramp makes the average follow the model early and settle to `decay` on long runs.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        decay = min(self.decay, (1 + n) / (10 + n))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        else:  # integer buffers (BatchNorm's num_batches_tracked) cannot be averaged
            torch._foreach_copy_(averaged, current)


class EMA(WeightAveraging):
    """Validation, the saved checkpoints' `state_dict` and the final weights all use the average."""

    def __init__(self, decay: float) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=RampedEmaFn(decay))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The module is still on the CPU here; keep the average on the training device (this rank's GPU).
        self._device = self._device or trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)


def epochs_within(budget_s: float, elapsed_s: float, done: int, cap: int) -> int:
    """How many epochs fit in the budget at the pace so far: at least those done, at most `cap`."""
    if done <= 0 or elapsed_s <= 0:
        return cap
    return max(done, min(cap, math.floor(budget_s * done / elapsed_s)))


class FitScheduleToBudget(pl.Callback):
    """With `train.max_minutes`, re-fit the epoch count and the cosine's length to the budget after each
    epoch (what Ultralytics' `time=` does), so the LR has decayed when time runs out.

    Without it the cosine spans `train.epochs`; a run cut by the clock would stop at a high LR, with its
    weights never annealed. Elapsed time comes from Lightning's Timer, so it includes validation and the
    epochs before a resume.
    """

    def __init__(self, budget_minutes: float) -> None:
        self.budget_s = budget_minutes * 60
        self.cap = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cap = int(trainer.max_epochs or 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
        if timer is None:
            return
        done = trainer.current_epoch + 1
        epochs = epochs_within(self.budget_s, timer.time_elapsed("train"), done, self.cap)
        trainer.fit_loop.max_epochs = epochs
        for config in trainer.lr_scheduler_configs:
            for schedule in getattr(config.scheduler, "lr_lambdas", []):
                if hasattr(schedule, "total_steps"):
                    schedule.total_steps = max(round(trainer.global_step * epochs / done), 1)


class TrainHistory(pl.Callback):
    """Per-epoch train loss, val/map, val/map_50, lr, cumulative train seconds; train-only seconds and images
    (for images/s).

    Saved in checkpoints, so a resumed run's curves and totals cover the epochs before the resume too.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._loss_sum = 0.0
        self._loss_count = 0
        self._resumed_mid_epoch = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed mid-epoch, Lightning skips that epoch's start: the clock restarts here, the loss so far is kept.
        if self._resumed_mid_epoch:
            self._started, self._resumed_mid_epoch = time.perf_counter(), False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        size = len(batch["boxes"])
        self.images += size
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss.detach()) * size
        self._loss_count += size

    def _stop_clock(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_clock()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_clock()
        metrics = trainer.callback_metrics
        entry: dict[str, Any] = {
            "epoch": trainer.current_epoch + 1,
            "train/loss": self._loss_sum / max(self._loss_count, 1),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            "train_seconds": round(self.seconds, 2),  # cumulative, for time-to-accuracy curves
        }
        for name in ("val/map", "val/map_50"):
            if name in metrics:
                entry[name] = float(metrics[name])
        self.epochs.append(entry)

    def best(self) -> dict[str, Any] | None:
        scored = [e for e in self.epochs if "val/map" in e]
        return max(scored, key=lambda e: e["val/map"]) if scored else None

    def state_dict(self) -> dict[str, Any]:
        """Saved mid-epoch too (a time-based resume checkpoint): the open epoch's loss and seconds so far."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return {"epochs": self.epochs, "images": self.images, "seconds": self.seconds + running,
                "open_epoch": self._started is not None, "loss_sum": self._loss_sum, "loss_count": self._loss_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        self.images = int(state_dict["images"])
        self.seconds = float(state_dict["seconds"])
        self._resumed_mid_epoch = bool(state_dict.get("open_epoch", False))
        self._loss_sum = float(state_dict.get("loss_sum", 0.0))
        self._loss_count = int(state_dict.get("loss_count", 0))
