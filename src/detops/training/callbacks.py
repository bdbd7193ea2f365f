"""Training callbacks: EMA of the weights (Lightning's WeightAveraging) and per-epoch history."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging


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


class TrainHistory(pl.Callback):
    """Per-epoch train loss, val/map, val/map_50, lr; train-only seconds and images (for images/s).

    Saved in checkpoints, so a resumed run's curves and totals cover the epochs before the resume too.
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._loss_sum = 0.0
        self._loss_count = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()
        self._loss_sum, self._loss_count = 0.0, 0

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
        }
        for name in ("val/map", "val/map_50"):
            if name in metrics:
                entry[name] = float(metrics[name])
        self.epochs.append(entry)

    def best(self) -> dict[str, Any] | None:
        scored = [e for e in self.epochs if "val/map" in e]
        return max(scored, key=lambda e: e["val/map"]) if scored else None

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = list(state_dict["epochs"])
        self.images = int(state_dict["images"])
        self.seconds = float(state_dict["seconds"])
