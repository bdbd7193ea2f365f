from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from detops.config.base import Section

# Silhouettes `detops.sample.shapes` can draw; colour is random, so the outline is what defines a class.
ShapeName = Literal["circle", "square", "triangle", "star", "cross"]


class SampleParams(Section):
    """Synthetic dataset written by `detops sample` to `<paths.raw>/<name>/` (COCO format)."""

    name: str = Field("sample", pattern=r"^[A-Za-z0-9_.-]+$", description="Folder name under paths.raw.")
    num_images: int = Field(400, ge=1, le=100_000, description="Number of images.")
    image_size: int = Field(256, ge=64, le=2048, description="Square image side in pixels.")
    min_object_size: int = Field(8, ge=4, description="Smallest object side in pixels.")
    max_object_size: int = Field(128, ge=8, description="Largest object side in pixels.")
    typical_object_size: int = Field(
        40, ge=4, description="Median object side: sizes are log-normal around it (sigma 0.5), within the bounds."
    )
    max_objects_per_image: int = Field(8, ge=1, le=100, description="Upper bound on objects per image.")
    classes: list[ShapeName] = Field(
        ["circle", "square", "triangle", "star"],
        min_length=1,
        description="Object classes (category ids 1.. in this order); any of circle, square, triangle, star, cross.",
    )
    class_weights: list[float] = Field(
        [0.4, 0.3, 0.2, 0.1], description="Relative frequency of each class (same length as classes): imbalance."
    )
    max_rotation: float = Field(
        15,
        ge=0,
        le=180,
        description="Objects turn by up to this many degrees either way from upright (180 = any angle; "
        "upright shapes are far quicker to learn from scratch).",
    )
    min_visible: float = Field(
        0.4, ge=0.05, le=1, description="Smallest visible share of an object after border truncation and occlusion."
    )
    texture: float = Field(0.08, ge=0, le=0.5, description="Amplitude of the low-frequency background texture.")
    noise_std: float = Field(5.0, ge=0, le=64, description="Gaussian pixel noise, std in 8-bit grey levels.")
    min_contrast: float = Field(
        0.25, ge=0, le=0.45, description="Smallest luminance gap (0..1) between an object and what lies under it."
    )
    lighting: float = Field(0.2, ge=0, le=0.8, description="Strength of the random global brightness/contrast change.")
    blur_probability: float = Field(0.2, ge=0, le=1, description="Share of images blurred (Gaussian, radius 0.5-1.5).")
    seed: int = Field(0, ge=0, description="Same seed, byte-identical dataset.")
    workers: int = Field(0, ge=0, le=64, description="Processes rendering images; 0 = one per core.")

    @model_validator(mode="after")
    def _consistent(self) -> SampleParams:
        if self.min_object_size > self.max_object_size:
            raise ValueError("min_object_size must be <= max_object_size")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be unique, got {self.classes}")
        if len(self.class_weights) != len(self.classes):
            raise ValueError(
                f"class_weights has {len(self.class_weights)} values for {len(self.classes)} classes; give one each"
            )
        if any(w <= 0 for w in self.class_weights):
            raise ValueError(f"class_weights must all be > 0, got {self.class_weights}")
        return self
