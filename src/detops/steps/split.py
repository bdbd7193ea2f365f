"""Step `split`: validated dataset -> train/val/test COCO files, the assignments file and a report.

Reads `data/prepared/validated.json` and, with `split.stable`, the previous `data/prepared/split_assignments.json`
(in a fresh checkout, a pod, where there is none: the one logged with the newest registered version's training run,
so the images the champion trained on stay in train and its test images stay unseen); hashes the images for
near-duplicate grouping (cached by content sha1 in `.cache/detops/phash_cache.json`, beside the other caches: a cache
is no step's output or input); writes one canonical json per split, the new assignments and `reports/split.json`.
Everything is decided before the first file is written.
"""

from __future__ import annotations

from pathlib import Path

from detops.atomic import write_json
from detops.dataset.canonical import SPLITS, dataset_root, read_dataset, subset, write_dataset
from detops.dataset.paths import resolve_inside
from detops.splitting.dedup import hash_images
from detops.splitting.plan import plan_split
from detops.splitting.report import split_report
from detops.splitting.stability import (
    PreviousAssignments,
    assignments_payload,
    read_assignments,
    registered_assignments,
    write_assignments,
)
from detops.steps.result import StepResult
from detops.workspace import Workspace

HASH_CACHE = ".cache/detops/phash_cache.json"
SHARE_TOLERANCE_PP = 5.0


def previous_assignments(ws: Workspace) -> tuple[PreviousAssignments | None, str]:
    """The last split's assignments (and, when they came from the registry, a note saying so)."""
    import tempfile

    if ws.split_assignments.is_file():
        return read_assignments(ws.split_assignments), ""
    with tempfile.TemporaryDirectory(prefix="detops-split-") as tmp:
        found = registered_assignments(ws, Path(tmp))
    if found is None:
        return None, ""
    previous, version = found
    return previous, f"no {ws.relative(ws.split_assignments)} here: started from the splits logged with version " \
                     f"{version} of the registry"


def run(ws: Workspace) -> StepResult:
    params = ws.params.split
    dataset = read_dataset(ws.validated_json)
    images = dataset["images"]
    previous, since = previous_assignments(ws) if params.stable else (None, "")

    codes, hashed = None, 0
    if params.dedup and images:
        root = dataset_root(dataset, ws.root)
        paths = [resolve_inside(root, im["file_name"], f"{ws.validated_json}: image {im['id']}") for im in images]
        sha1s = [im.get("sha1") for im in images]
        codes, hashed = hash_images(paths, sha1s, ws.root / HASH_CACHE, params.hash_workers)

    plan = plan_split(dataset, params, codes, previous)
    report = split_report(dataset, plan, params, removed=previous.removed(images) if previous else 0)

    outputs = {}
    for name in SPLITS:
        ids = [im["id"] for im, split in zip(images, plan.splits, strict=True) if split == name]
        outputs[name] = ws.relative(write_dataset(ws.split_json(name), subset(dataset, ids)))
    outputs["assignments"] = ws.relative(
        write_assignments(ws.split_assignments, assignments_payload(images, plan.splits, plan.groups))
    )
    outputs["report"] = ws.relative(write_json(ws.output("split", "report"), report))

    groups, assignment = report["groups"], report["assignment"]
    return StepResult(
        step="split",
        outputs=outputs,
        metrics={
            **{f"images_{name}": report["images"][name] for name in SPLITS},
            "max_share_deviation_pp": report["max_share_deviation_pp"],
            "groups": groups["count"],
            "largest_group": groups["largest"],
            "near_duplicate_pairs": groups["near_duplicate_pairs"],
            "kept_from_previous": assignment["kept_from_previous"],
            "newly_assigned": assignment["newly_stratified"] + assignment["joined_pinned_group"],
            "images_hashed": hashed,
        },
        notes=[*([since] if since else []), *_notes(report, plan.spanning_groups, params.ratios(), outputs["report"])],
    )


def _notes(report: dict, spanning: list[list[str]], ratios: tuple[float, ...], report_file: str) -> list[str]:
    """Warnings a user should act on: an oversized group, a group across splits, a skewed class."""
    notes = []
    total = report["images"]["total"]
    smallest_target = min(r for r in ratios if r > 0) * total
    largest = report["groups"]["largest"]
    if largest > 1 and largest > smallest_target:
        notes.append(
            f"the largest group holds {largest} of {total} images (first: {report['groups']['largest_first_image']}), "
            f"more than the smallest split's target of {smallest_target:.0f}: near-duplicate chains that long "
            "usually join merely similar images. Lower split.hash_max_distance (or set split.dedup=false and rely "
            "on split.group_by) if they are not copies of one image."
        )
    if spanning:
        notes.append(
            f"{len(spanning)} group(s) of near-duplicates or group_by images span several splits because their "
            f"pinned images (previous split or source split) disagree, e.g. {', '.join(spanning[0][:3])}. That is "
            "leakage: set split.respect_source_splits=false, or split.stable=false to re-split from scratch."
        )
    if report["max_share_deviation_pp"] > SHARE_TOLERANCE_PP:
        at = report["max_share_deviation_at"]
        notes.append(
            f"class {at['class']!r} deviates {report['max_share_deviation_pp']:.1f} pp from its global box share "
            f"in {at['split']} (tolerance {SHARE_TOLERANCE_PP:g} pp); see {report_file}."
        )
    return notes
