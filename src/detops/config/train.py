from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from detops.config.base import Section


class AugmentParams(Section):
    """albumentations pipeline for training images; every transform is bbox-safe."""

    hflip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    vflip: float = Field(0.0, ge=0, le=1, description="Probability of a vertical flip.")
    affine: float = Field(0.3, ge=0, le=1, description="Probability of the random zoom + shift below.")
    scale_min: float = Field(0.75, gt=0, le=1, description="Smallest random zoom (affine scale).")
    scale_max: float = Field(1.25, ge=1, le=4, description="Largest random zoom (affine scale).")
    translate: float = Field(0.1, ge=0, le=0.5, description="Largest random shift, as a share of the image side.")
    brightness_contrast: float = Field(0.2, ge=0, le=1, description="Probability of brightness/contrast jitter.")
    hue_saturation: float = Field(0.0, ge=0, le=1, description="Probability of hue/saturation jitter.")
    blur: float = Field(0.0, ge=0, le=1, description="Probability of a Gaussian blur.")
    min_visibility: float = Field(
        0.3, ge=0, le=1, description="A box cut by augmentation below this visible share is dropped."
    )


class TrainParams(Section):
    """Detector training: timm backbone + FPN + anchor-free head, Lightning Trainer."""

    backbone: str = Field("regnetx_002", min_length=1, description="Any timm model name with features_only.")
    pretrained: bool | str = Field(
        False, description="false: from scratch; true: timm hub weights (needs them cached); or a path "
        "to a timm state dict (.safetensors / .pth)."
    )
    strides: list[int] = Field([8, 16, 32], min_length=1, description="Backbone feature strides fed to the FPN.")
    fpn_channels: int = Field(64, ge=8, le=512, description="Channels of the feature pyramid and head.")
    head_convs: int = Field(2, ge=1, le=6, description="Conv layers per head branch.")
    center_radius: float = Field(
        2.5, ge=0, description="FCOS centre sampling: positives lie within this many strides of a box centre; 0 = off."
    )
    image_size: int = Field(192, ge=32, le=2048, description="Letterboxed square input side in pixels.")
    batch_size: int = Field(8, ge=1, le=1024, description="Images per batch per device.")
    epochs: int = Field(22, ge=1, le=10_000, description="Maximum number of epochs (the demo: about 3 CPU minutes).")
    max_minutes: float = Field(
        0, ge=0, description="Wall-clock training budget, validation included; after each epoch the epoch count and "
        "the LR schedule are re-fitted to it; 0 = no limit."
    )
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(6e-3, gt=0, description="Peak learning rate after warmup.")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="Final learning rate of the cosine, as a share of lr.")
    weight_decay: float = Field(0.05, ge=0, le=1, description="Weight decay (not applied to norms and biases).")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warmup length before the cosine decay.")
    grad_clip: float = Field(10.0, ge=0, description="Gradient norm clip; 0 = off.")
    checkpoint_minutes: float = Field(
        10, ge=0, description="Inside an epoch, write the resume checkpoint at least this often (it is also written "
        "after every epoch), so an interrupted run loses at most this much work; 0 = at epoch ends only."
    )
    ema: bool = Field(True, description="Keep an exponential moving average of the weights for eval.")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="Largest EMA decay per step (ramped up from 0).")
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = Field(
        "auto", description="auto: bf16-mixed on a GPU that supports it, 32 on CPU."
    )
    accelerator: Literal["auto", "cpu", "gpu"] = Field("auto", description="Lightning accelerator.")
    devices: int | Literal["auto"] = Field("auto", description="Devices per node (DDP when > 1).")
    num_nodes: int = Field(
        1, ge=1, le=4096, description="Machines (pods) training together, DDP across them; each runs `detops train` "
        "under torchrun (TORCHELASTIC_RUN_ID set), e.g. one pod of a Kubernetes Indexed Job per node: README, "
        "On a cluster. 1 = this machine only."
    )
    strategy: str = Field("auto", min_length=1, description="Lightning strategy, e.g. ddp for several GPUs.")
    num_workers: int = Field(
        -1, ge=-1, le=64, description="DataLoader workers; -1 = sized to the machine (0 without a GPU)."
    )
    cache_images: Literal["auto", "ram", "disk", "false"] = Field(
        "auto", description="Decode (and resize) every image once. auto: in RAM when the decoded set fits in "
        "cache_ram_share of the available memory (the cgroup limit in a container), else a memory-mapped file in "
        "cache_dir, else decode every time; ram / disk force one; false: decode every time. true = ram."
    )
    cache_ram_share: float = Field(
        0.5, gt=0, le=1, description="Share of the available memory the RAM cache may take under auto: the rest "
        "is for the model, the batches and the workers, so a grown dataset goes to disk instead of being killed."
    )
    cache_dir: str = Field(
        ".cache/detops/images", min_length=1, description="Disk image cache (workspace-relative), one file per "
        "image list, size and decode code (source, Pillow and OpenCV versions), reused across runs."
    )
    cache_keep: int = Field(
        2, ge=1, le=1000, description="Disk image caches kept per dataset (train, val), the most recently used; "
        "older ones are deleted when a run opens its own, never the one in use."
    )
    patience: int = Field(10, ge=0, description="EarlyStopping patience in epochs on val/map; 0 = off.")
    seed: int = Field(0, ge=0, description="Global seed (Lightning seed_everything).")
    augment: AugmentParams = Field(default_factory=AugmentParams)

    @field_validator("cache_images", mode="before")
    @classmethod
    def _cache_images_bool(cls, value: object) -> object:
        """YAML true/false (the earlier boolean form) mean ram / false."""
        if isinstance(value, bool):
            return "ram" if value else "false"
        return value

    @field_validator("strides")
    @classmethod
    def _strides_increasing(cls, value: list[int]) -> list[int]:
        if any(s <= 0 for s in value) or sorted(set(value)) != value:
            raise ValueError("strides must be positive and strictly increasing, e.g. [8, 16, 32]")
        return value
