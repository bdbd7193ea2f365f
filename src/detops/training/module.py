"""LightningModule: loss, optimizer and schedule, validation mAP; a checkpoint rebuilds the detector alone."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from detops.errors import TrainingError
from detops.evaluation.map_metric import new_map_metric
from detops.model.detector import Detector, DetectorConfig
from detops.model.loss import DetectionLoss
from detops.model.postprocess import decode


class WarmupCosine:
    """LR factor per optimizer step: linear warmup from 1% to 1, then cosine down to `min_ratio`.

    An object rather than a closure so LambdaLR saves and restores it with the checkpoint.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, max(total_steps, 1), min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.01 + 0.99 * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class DetectorModule(pl.LightningModule):
    """Hyperparameters (saved in every checkpoint) are plain JSON: model config, classes, optimization,
    and the postprocess thresholds validation uses."""

    def __init__(self, model: dict[str, Any], classes: dict[str, list[Any]], optim: dict[str, Any],
                 postprocess: dict[str, Any], pretrained: bool | str = False) -> None:
        super().__init__()
        # logger=False: detops logs the params.yaml view itself; pretrained paths are machine-specific.
        self.save_hyperparameters(ignore=["pretrained"], logger=False)
        # channels_last: faster convolutions on CPU (oneDNN) and on GPU tensor cores alike.
        self.model = Detector(DetectorConfig.from_dict(model), pretrained=pretrained).to(
            memory_format=torch.channels_last
        )
        self.criterion = DetectionLoss(self.model.points, self.model.point_strides, optim["center_radius"])
        self.val_map = new_map_metric()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    @staticmethod
    def _images(batch: dict[str, Any]) -> torch.Tensor:
        images = batch["images"].float().div_(255.0)
        return images.contiguous(memory_format=torch.channels_last)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        raw = self.model(self._images(batch))
        losses = self.criterion(raw, batch["boxes"], batch["labels"])
        loss = losses["loss"]
        diverged = self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False)
        if diverged:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise TrainingError(
                f"training diverged: the loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step} "
                f"(lr {lr:.3g}). Lower train.lr (now {self.hparams['optim']['lr']:g}), lengthen "
                "train.warmup_epochs or set train.grad_clip, and check the data for broken boxes."
            )
        size = len(batch["boxes"])
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=size)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        for name in ("cls", "box", "ctr"):
            self.log(f"train/loss_{name}", losses[name], on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        raw = self.model(self._images(batch))
        detections = decode(raw, **self.hparams["postprocess"])
        targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"], strict=True)]
        self.val_map.update(list(detections), targets)  # type: ignore[arg-type]

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()  # synced across DDP ranks by torchmetrics
        self.val_map.reset()
        self.log("val/map", result["map"].float(), prog_bar=True)
        self.log("val/map_50", result["map_50"].float(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optim = self.hparams["optim"]
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for param in self.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)  # norms, biases, level scales
        groups = [{"params": decay, "weight_decay": optim["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer: torch.optim.Optimizer
        if optim["optimizer"] == "sgd":
            optimizer = torch.optim.SGD(groups, lr=optim["lr"], momentum=optim["momentum"], nesterov=True)
        else:
            optimizer = torch.optim.AdamW(groups, lr=optim["lr"])
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        warmup = round(optim["warmup_epochs"] * total / epochs)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, optim["min_lr_ratio"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
