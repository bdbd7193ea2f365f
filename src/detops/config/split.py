from __future__ import annotations

from pydantic import Field, model_validator

from detops.config.base import Section


class SplitParams(Section):
    """Leakage-safe, stratified, stable train/val/test split."""

    train: float = Field(0.7, gt=0, lt=1, description="Share of images in train.")
    val: float = Field(0.2, ge=0, lt=1, description="Share of images in val.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of images in test.")
    seed: int = Field(0, ge=0, description="Seed for tie-breaking; same data and seed, same split.")
    dedup: bool = Field(True, description="Group near-duplicate images (perceptual hash) into one split.")
    hash_max_distance: int = Field(
        4, ge=0, le=64, description="Hamming distance (64-bit pHash) at or below which images are near-duplicates."
    )
    group_by: str = Field(
        "",
        description="Keep images together: a regex on file_name (its first group, or whole match, is the "
        "group key), or `attr:<name>` for an image attribute. Empty = off.",
    )
    box_count_bins: list[int] = Field(
        [1, 4, 16], description="Edges of the boxes-per-image bins that are stratified alongside classes."
    )
    respect_source_splits: bool = Field(
        False, description="Keep the source's own splits (VOC ImageSets, YOLO folders) when present."
    )
    stable: bool = Field(True, description="Images already in the previous split file keep their split.")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self
