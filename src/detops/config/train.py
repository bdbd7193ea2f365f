from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class AugmentParams(Section):
    """albumentations pipeline for training images; every transform is bbox-safe."""

    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    scale_min: float = Field(0.75, gt=0, le=1, description="Smallest random zoom (affine scale).")
    scale_max: float = Field(1.25, ge=1, le=4, description="Largest random zoom (affine scale).")
    brightness_contrast: float = Field(0.5, ge=0, le=1, description="Probability of brightness/contrast jitter.")
    hue_saturation: float = Field(0.3, ge=0, le=1, description="Probability of hue/saturation jitter.")
    blur: float = Field(0.1, ge=0, le=1, description="Probability of a Gaussian blur.")
    min_visibility: float = Field(
        0.3, ge=0, le=1, description="A box cut by augmentation below this visible share is dropped."
    )


class TrainParams(Section):
    """Detector training: timm backbone + FPN + anchor-free head, Lightning Trainer."""

    backbone: str = Field("resnet18", min_length=1, description="Any timm model name with features_only.")
    pretrained: bool | str = Field(
        False, description="false: from scratch; true: timm hub weights (needs them cached); or a path "
        "to a timm state dict (.safetensors / .pth)."
    )
    fpn_channels: int = Field(64, ge=8, le=512, description="Channels of the feature pyramid and head.")
    head_convs: int = Field(2, ge=1, le=6, description="Conv layers per head branch.")
    image_size: int = Field(256, ge=32, le=2048, description="Letterboxed square input side in pixels.")
    batch_size: int = Field(16, ge=1, le=1024, description="Images per batch per device.")
    epochs: int = Field(30, ge=1, le=10_000, description="Maximum number of epochs.")
    max_minutes: float = Field(0, ge=0, description="Wall-clock training budget; 0 = no limit.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(2e-3, gt=0, le=1, description="Peak learning rate after warmup.")
    weight_decay: float = Field(0.05, ge=0, le=1, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warmup length before the cosine decay.")
    grad_clip: float = Field(10.0, ge=0, description="Gradient norm clip; 0 = off.")
    ema: bool = Field(True, description="Keep an exponential moving average of the weights for eval.")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per step.")
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on a GPU that supports it, 32 on CPU."
    )
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="Lightning accelerator.")
    devices: int | Literal["auto"] = Field("auto", description="Devices per node (DDP when > 1).")
    num_workers: int = Field(-1, ge=-1, le=64, description="DataLoader workers; -1 = sized to the machine.")
    cache_images: bool = Field(True, description="Keep decoded images in RAM after the first epoch.")
    patience: int = Field(10, ge=0, description="EarlyStopping patience in epochs on val/map; 0 = off.")
    seed: int = Field(0, ge=0, description="Global seed (Lightning seed_everything).")
    augment: AugmentParams = Field(default_factory=AugmentParams)
