"""Leakage-safe, stratified, stable train/val/test splitting (the `split` step's domain logic).

- `dedup`: perceptual hashes (cached by sha1) and near-duplicate pairs by multi-index hashing.
- `groups`: `group_by` rules and the union of every "keep together" relation into groups.
- `labels`: what is stratified (boxes per class, `empty`, boxes-per-image bins).
- `stratify`: grouped multi-label iterative stratification (Sechidis et al. 2011).
- `stability`: the assignments file that keeps old images in their split as data grows.
- `plan`: the decision for every image; `report`: the balance/grouping/stability report.
"""

from detops.splitting.dedup import hash_images, near_duplicate_pairs
from detops.splitting.plan import SplitPlan, plan_split
from detops.splitting.report import split_report
from detops.splitting.stability import PreviousAssignments, assignments_payload, read_assignments, write_assignments
from detops.splitting.stratify import iterative_stratification

__all__ = [
    "PreviousAssignments",
    "SplitPlan",
    "assignments_payload",
    "hash_images",
    "iterative_stratification",
    "near_duplicate_pairs",
    "plan_split",
    "read_assignments",
    "split_report",
    "write_assignments",
]
