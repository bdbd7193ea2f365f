from __future__ import annotations

import re
from itertools import pairwise

from pydantic import Field, field_validator, model_validator

from detops.config.base import Section

# Named `group_by` rules. Roboflow's export-time augmentation writes `<photo>_<ext>.rf.<md5>.<ext>`
# for every copy of one photo; crops and shears defeat a perceptual hash, the name does not.
GROUP_BY_PRESETS: dict[str, str] = {"roboflow": r"([^/]+)\.rf\.[0-9a-f]{32}\.[^./]+$"}
ATTR_PREFIX = "attr:"


class SplitParams(Section):
    """Leakage-safe, stratified, stable train/val/test split."""

    train: float = Field(0.7, gt=0, lt=1, description="Share of images in train.")
    val: float = Field(0.2, ge=0, lt=1, description="Share of images in val.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of images in test.")
    seed: int = Field(0, ge=0, description="Seed for tie-breaking; same data and seed, same split.")
    dedup: bool = Field(True, description="Group near-duplicate images (perceptual hash) into one split.")
    hash_max_distance: int = Field(
        4,
        ge=0,
        le=32,
        description="Hamming distance between 64-bit pHashes (in practice even) at or below which images are "
        "near-duplicates. "
        "4 catches re-encoded, resized, recoloured and mirrored copies (0-4 bits), not crops (10+ bits for 5%): "
        "use group_by for those.",
    )
    hash_mirrored: bool = Field(
        True, description="Also compare with each image's mirror, so horizontally flipped copies are near-duplicates."
    )
    hash_workers: int = Field(0, ge=0, le=64, description="Threads hashing images; 0 = one per core (at most 8).")
    group_by: list[str] = Field(
        ["roboflow"],
        description="Rules that keep images together (union of all): a regex searched in file_name (its first "
        "group, or the whole match, is the group key), `attr:<name>` for an image attribute, or a preset "
        "(`roboflow`: augmented copies of one photo). Images a rule does not match stay alone.",
    )
    box_count_bins: list[int] = Field(
        [1, 4, 16],
        description="Increasing edges of the boxes-per-image bins stratified alongside classes (an image without "
        "boxes has its own `empty` label).",
    )
    respect_source_splits: bool = Field(
        False, description="Keep the source's own splits (VOC ImageSets, YOLO folders) when present."
    )
    stable: bool = Field(True, description="Images already in the previous split file keep their split.")

    @field_validator("group_by", mode="before")
    @classmethod
    def _one_rule_is_a_list(cls, value: object) -> object:
        """`--set split.group_by=attr:video` gives a string; an empty string means no rule."""
        if isinstance(value, str):
            return [value] if value.strip() else []
        return value

    @field_validator("group_by")
    @classmethod
    def _rules_compile(cls, rules: list[str]) -> list[str]:
        for rule in rules:
            if rule.startswith(ATTR_PREFIX):
                if not rule[len(ATTR_PREFIX) :].strip():
                    raise ValueError(f"{rule!r}: name the image attribute, e.g. attr:video")
            elif rule not in GROUP_BY_PRESETS:
                try:
                    re.compile(rule)
                except re.error as exc:
                    raise ValueError(f"{rule!r} is not a valid regex ({exc})") from None
        return rules

    @field_validator("box_count_bins")
    @classmethod
    def _bins_increase(cls, edges: list[int]) -> list[int]:
        if any(e < 1 for e in edges) or any(b <= a for a, b in pairwise(edges)):
            raise ValueError(f"box_count_bins must be increasing integers >= 1, got {edges}")
        return edges

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self

    def ratios(self) -> tuple[float, float, float]:
        """Target share of images per split, in `SPLITS` order (train, val, test)."""
        return (self.train, self.val, self.test)
