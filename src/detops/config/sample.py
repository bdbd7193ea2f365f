from __future__ import annotations

from pydantic import Field, model_validator

from detops.config.base import Section


class SampleParams(Section):
    """Synthetic dataset written by `detops sample` to `<paths.raw>/<name>/` (COCO format)."""

    name: str = Field("sample", pattern=r"^[A-Za-z0-9_.-]+$", description="Folder name under paths.raw.")
    num_images: int = Field(400, ge=1, le=100_000, description="Number of images.")
    image_size: int = Field(256, ge=64, le=2048, description="Square image side in pixels.")
    min_object_size: int = Field(8, ge=4, description="Smallest object side in pixels.")
    max_object_size: int = Field(128, ge=8, description="Largest object side in pixels.")
    max_objects_per_image: int = Field(8, ge=1, le=100, description="Upper bound on objects per image.")
    seed: int = Field(0, ge=0, description="Same seed, byte-identical dataset.")

    @model_validator(mode="after")
    def _sizes_ordered(self) -> SampleParams:
        if self.min_object_size > self.max_object_size:
            raise ValueError("min_object_size must be <= max_object_size")
        return self
