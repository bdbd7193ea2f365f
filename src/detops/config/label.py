"""The labelling loop: selection of images worth labelling, the Label Studio round trip, the label audit."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from detops.config.base import Section


class LabelParams(Section):
    """What to label next (`detops label select`) and the model-assisted label audit (`detops label audit`) that a
    labelled batch passes before it joins the dataset."""

    budget: int = Field(50, ge=1, description="Images `detops label select` picks from an unlabelled batch.")
    audit: Literal["warn", "review"] = Field("warn", description=(
        "warn: report label issues and accept the batch; review: flagged images go back to the Label Studio "
        "project for review, the rest of the batch is accepted."))
    model: str = Field("", description=(
        "Model that selects and audits: empty = the registry's champion (promote.alias), whose checkpoint gives "
        "both the detections and the embeddings; else a checkpoint file or a registry reference "
        "(models:/<name>/<version>)."))
    min_score: float = Field(0.05, gt=0, lt=1, description=(
        "Lowest detection score kept for selection and audit: low-score boxes carry the uncertainty and the "
        "'overlooked object' evidence cleanlab needs, so this is far below the serving threshold."))
    uncertain_score: float = Field(0.3, gt=0, lt=1, description=(
        "Lowest detection score counted in an image's uncertainty for selection: below it a box is background the "
        "model has ruled out, and summing the entropy of the ~100 such boxes NMS keeps per image measures how many "
        "there are, not doubt (clean and noisy images then differed by 1.1x; counted from 0.3, by 5x)."))
    confident_score: float = Field(0.5, gt=0, lt=1, description=(
        "Score from which a detection counts as confident for cleanlab's overlooked and swap scores (its "
        "high_probability_threshold, 0.95 built in), which this detector's scores never reached on the sample's "
        "val split (max 0.86); there 94 % of its boxes scoring >= 0.5 match a labelled box, against 39 % of those "
        "at 0.4-0.5."))
    plausible_score: float = Field(0.2, gt=0, lt=1, description=(
        "Score from which a detection can vouch for a labelled box's location (cleanlab's bad-location "
        "low_probability_threshold, 0.5 built in); on the sample 90 % of labelled boxes have a matching "
        "detection above 0.33."))
    review_threshold: float = Field(0.5, gt=0, lt=1, description=(
        "cleanlab label quality below which an image is flagged (sent back for review under audit=review). "
        "On the sample's val+test with 5 % of images per error kind injected (a model at test mAP@0.5 0.90): "
        "untouched images have median quality 0.92 (10th percentile 0.52), injected ones 0.47; at 0.5, 20 of 121 "
        "images are flagged, 11 of the 18 injected."))
    accuracy_share: float = Field(0.2, ge=0, lt=1, description=(
        "Share of each pushed batch's images drawn at random, outside the ranking, and pushed without "
        "pre-annotations: labelled like the rest, they measure the champion's accuracy on the traffic it serves "
        "without the ranking's bias (its hardest images) or the labellers' anchoring on its boxes. 0 = off."))
    push_drifted: bool = Field(False, description=(
        "labels-sync selects and pushes each batch that retrain-on-drift found unlabelled (its labels_needed list) "
        "to Label Studio, pre-annotated by label.model, so the loop runs unattended; false: a person runs "
        "`detops label select` and `detops label push`."))
    thumbnails: int = Field(12, ge=0, le=100, description="Top-ranked images shown as thumbnails on the run page.")
    pictures: int = Field(24, ge=0, le=500, description=(
        "Lowest-quality images drawn (label beside prediction) in the audit page; pictures cost time and bytes."))
