from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field, field_validator

from detops.config.base import Section

# Evidently's statistical tests for numerical columns (evidently.legacy.calculations.stattests), by name.
DriftMethod = Literal[
    "ks", "wasserstein", "psi", "kl_div", "jensenshannon", "hellinger", "anderson", "cramer_von_mises", "ed", "es",
    "mannw", "t_test", "empirical_mmd",
]
# Suffixes a dataset reader takes for labels: a manifest named so would be read as annotations.
_LABEL_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".xml")


class ColumnTest(Section):
    """The drift test of one column: an Evidently statistical test and its threshold."""

    method: DriftMethod = Field(description="Evidently statistical test.")
    threshold: float = Field(gt=0, description="p-value below which (tests) or distance from which (distances) "
                                               "the column drifted.")


class MonitorParams(Section):
    """Drift monitoring (`detops monitor`): image features of new data (a batch in the landing folder, or `current`)
    against the reference, one Evidently test per column with the test and threshold pinned here (Evidently's own
    default test changes with the row count). Verdict: `insufficient data` when the batch has fewer than
    min_batch_size readable images; else `drift` when the share of drifted columns is at least drift_share or any
    drifted column matches critical_columns; else `no drift`."""

    landing: str = Field(
        "data/landing", description="Folder where new data batches arrive, one sub-folder each; its ledger.json "
                                    "records every batch checked, so a batch is checked and announced once. An "
                                    "fsspec URL (s3://bucket/landing) puts it on object storage, with the "
                                    "labelling loop's state under .loop/ beside the batches."
    )
    manifest: str = Field(
        "_READY", min_length=1, description="File that marks a batch folder complete (copy it last: a batch "
                                            "without it is never read)."
    )
    reference: str = Field(
        "", description="Reference: a feature table (.parquet or .csv, e.g. the champion's) or a canonical dataset "
                        "json; empty = the train split."
    )
    current: str = Field(
        "", description="Canonical dataset json to check when no batch is named; empty = the new batches in landing."
    )
    min_batch_size: int = Field(50, ge=2, description="Fewest readable images a check needs; fewer: insufficient data.")
    method: DriftMethod = Field(
        "ks", description="Test of every column (ks: two-sample Kolmogorov-Smirnov, calibrated at any row count)."
    )
    threshold: float = Field(
        0.001, gt=0, description="Threshold of `method` (ks: p-value; 0.001 keeps false alarms near 1 % per check "
                                 "over a dozen columns)."
    )
    per_column: dict[str, ColumnTest] = Field(
        {}, description="Test per column, overriding method/threshold; keys are column names or globs (class_*)."
    )
    drift_share: float = Field(0.5, gt=0, le=1, description="Share of drifted columns that is drift on its own.")
    critical_columns: list[str] = Field(
        ["brightness", "contrast", "saturation", "sharpness", "width", "height", "box_count", "box_area", "class_*",
         "embedding", "pred_count", "pred_score_mean", "pred_class_*"],
        description="Columns (names or globs) whose drift alone is drift; file_size (set by the encoder as much as "
                    "by the content) and aspect_ratio (moves with width or height) only count towards the share. "
                    "pred_count, pred_score_mean and pred_class_* are the champion's answers themselves (fewer or "
                    "less confident boxes, another class mix: the model is failing on this data, whatever the "
                    "images look like); pred_score_median and pred_low_share move with pred_score_mean and only "
                    "count towards the share.",
    )
    low_score: float = Field(
        0.5, gt=0, lt=1, description="A kept prediction (at predict.score_threshold) scoring below this is low-score "
                                     "in pred_low_share: the share of an image's boxes the model is unsure of."
    )
    embeddings: bool = Field(
        False, description="Also compare backbone embeddings (pooled last feature map, PCA fitted on the reference)."
    )
    embedding_checkpoint: str = Field("", description="Checkpoint whose backbone embeds images; empty = "
                                                      "<paths.models>/best.ckpt.")
    embedding_components: int = Field(8, ge=1, le=256, description="PCA components the embeddings are reduced to.")
    embedding_drift_share: float = Field(
        0.2, ge=0, lt=1, description="The embedding drifted when more than this share of its components did "
                                     "(each tested with method/threshold; Evidently's ratio method)."
    )
    screenshot: bool | Literal["auto"] = Field(
        "auto", description="PNG of the report by headless chromium: auto = when chromium is installed."
    )
    min_labelled_images: int = Field(30, ge=1, description=(
        "Fewest images of a labelled share (or a labelled batch) whose production mAP is alarmed on; a smaller one "
        "is scored and marked too small."))
    max_accuracy_drop: float = Field(0.05, ge=0, le=1, description=(
        "Alarm (event detops.accuracy.dropped) when the upper end of the production mAP's 90 % interval falls "
        "below the champion's own test mAP minus this."))
    min_production_map: float = Field(0.0, ge=0, le=1, description=(
        "Alarm when the upper end of the production mAP's 90 % interval falls below this; 0 = off."))
    workers: int = Field(0, ge=0, le=64, description="Threads computing image features; 0 = one per core.")
    cache: str = Field(".cache/detops/features", description="Feature cache, keyed by image sha1 (and model version).")

    @field_validator("manifest")
    @classmethod
    def _not_a_label_file(cls, value: str) -> str:
        """A manifest named like annotations would be read as the batch's labels."""
        if PurePath(value).name != value:
            raise ValueError(f"{value!r}: a file name, not a path")
        if value.lower().endswith(_LABEL_SUFFIXES):
            raise ValueError(f"{value!r}: a label reader would take it for annotations; use a name without "
                             f"{', '.join(_LABEL_SUFFIXES)} (e.g. _READY)")
        return value
