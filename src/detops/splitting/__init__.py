"""Leakage-safe, stratified, stable train/val/test splitting (the `split` step's domain logic).

- `dedup`: perceptual hashes (cached by sha1) and near-duplicate pairs by multi-index hashing.
- `groups`: `group_by` rules and the union of every "keep together" relation into groups.
- `labels`: what is stratified (boxes per class, `empty`, boxes-per-image bins).
- `stratify`: grouped multi-label iterative stratification (Sechidis et al. 2011).
- `stability`: the assignments file that keeps old images in their split as data grows.
- `plan`: the decision for every image; `report`: the balance/grouping/stability report.
"""
