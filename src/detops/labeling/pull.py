"""`detops label pull BATCH`: the finished annotations of a pushed batch become a labelled batch in the landing
folder, which retraining accepts as it accepts any labelled batch.

Label Studio's JSON export gives each box in percent of the image's `original_width` / `original_height`; they are
converted to COCO pixels here. A task is finished when it has an annotation that was not skipped (the latest one
counts); a task whose every annotation was skipped leaves its image out. Until every task is finished, nothing is
written: a half-labelled batch would enter the dataset with its missing boxes read as background.

The labelled batch `<batch>-labelled` (`<batch>-reviewed` for a review of flagged labels; COCO json + the images,
manifest last) is recorded in the drift ledger first: its images were checked already, so the drift check does not
announce them twice.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from detops.atomic import atomic_dir, write_json
from detops.dataset.canonical import Dataset, category_names, read_dataset
from detops.errors import DataError
from detops.labeling.labelconfig import result_to_box
from detops.labeling.state import RoundTrip, load_state, save_state
from detops.labeling.studio import LabelStudio
from detops.workspace import Workspace

LABELLED_SUFFIX, REVIEWED_SUFFIX = "-labelled", "-reviewed"
ANNOTATIONS_FILE = "annotations.json"


@dataclass(frozen=True)
class PullResult:
    """`labelled` is the batch written (None while tasks are pending)."""

    batch: str
    project: int
    tasks: int
    finished: int
    skipped: int
    labelled: str | None = None
    boxes: int = 0
    images: int = 0


def labelled_name(batch: str, review: bool = False) -> str:
    """The labelled batch a pull writes: `<batch>-labelled`, or `<batch>-reviewed` for labels sent back for
    review."""
    return f"{batch}{REVIEWED_SUFFIX if review else LABELLED_SUFFIX}"


def finished_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """The latest annotation that was not skipped, or None."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return max(done, key=lambda a: int(a.get("id") or 0)) if done else None


def was_skipped(task: dict[str, Any]) -> bool:
    """Every annotation of the task was skipped (cancelled): its image is left out."""
    annotations = task.get("annotations") or []
    return bool(annotations) and all(a.get("was_cancelled") for a in annotations)


def to_coco(batch: str, state: RoundTrip, export: list[dict[str, Any]], images: Dataset,
            classes: dict[int, str]) -> tuple[Dataset, int, int]:
    """(COCO dataset of the finished tasks, tasks finished, tasks skipped); DataError naming classes the dataset
    lacks."""
    by_id = {int(t["id"]): t for t in export}
    by_name = {str(im["file_name"]): im for im in images["images"]}
    class_ids = {name: cid for cid, name in classes.items()}
    coco: Dataset = {"images": [], "annotations": [],
                     "categories": [{"id": cid, "name": name} for cid, name in sorted(classes.items())]}
    unknown: dict[str, list[str]] = {}
    finished = skipped = 0
    for file_name, task_id in state.tasks.items():
        task = by_id.get(task_id)
        if task is None:
            raise DataError(f"batch {batch!r}: task {task_id} of {file_name} is gone from Label Studio project "
                            f"{state.project}; push the batch again to recreate it.")
        annotation = finished_annotation(task)
        if annotation is None:
            skipped += was_skipped(task)
            continue
        finished += 1
        image = dict(by_name[file_name], id=len(coco["images"]) + 1)
        coco["images"].append(image)
        for result in annotation.get("result") or []:
            converted = result_to_box(result)
            if converted is None:
                continue
            box, labels = converted
            for label in labels:
                if label not in class_ids:
                    unknown.setdefault(label, []).append(file_name)
                    continue
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image["id"],
                                            "category_id": class_ids[label], "bbox": box,
                                            "area": box[2] * box[3], "iscrowd": 0})
    if unknown:
        listing = "; ".join(f"{name!r} (e.g. {files[0]})" for name, files in sorted(unknown.items()))
        raise DataError(f"batch {batch!r}: Label Studio project {state.project} has boxes of class(es) the dataset "
                        f"lacks: {listing}. The dataset's classes are {sorted(classes.values())}; fix those boxes "
                        "in Label Studio (or add the class to the dataset), then pull again. Nothing was written.")
    return coco, finished, skipped


def check_boxes(ws: Workspace, batch: str, coco: Dataset) -> None:
    """The validation gate's box rules (inside the image give or take validate.bbox_tolerance_px, positive size,
    the smallest area): a box that breaks one is fixed in Label Studio, not dropped on the way."""
    from detops.validation.gate import validate_dataset
    from detops.validation.integrity import trusted_integrity

    outcome = validate_dataset(coco, trusted_integrity(coco), ws.params.validate_)
    bad = [p for p in outcome.problems if p.kind == "annotation"]
    if bad:
        shown = "\n".join(f"  {p.label}: {'; '.join(p.reasons)}" for p in bad[:20])
        raise DataError(f"batch {batch!r}: {len(bad)} box(es) from Label Studio break the validation gate's rules; "
                        f"fix them in the project, then pull again. Nothing was written.\n{shown}")


def pull(ws: Workspace, batch: str, studio: LabelStudio) -> PullResult:
    """Write the labelled batch once every task is finished; report the progress otherwise."""
    from detops.monitoring.batches import find_batch, landing_folder, ledger, read_batch

    state = load_state(ws, batch)
    if state is None:
        raise DataError(f"batch {batch!r} was never pushed to Label Studio: run `detops label push {batch}` first.")
    if state.pulled:
        return PullResult(batch, state.project, len(state.tasks), len(state.tasks), 0, state.pulled)
    source = find_batch(ws, batch)
    export = studio.export(state.project)
    data = read_batch(ws, source)
    classes = category_names(read_dataset(ws.output("import", "dataset")))
    coco, finished, skipped = to_coco(batch, state, export, data.dataset, classes)
    if finished + skipped < len(state.tasks):
        return PullResult(batch, state.project, len(state.tasks), finished, skipped)
    if not coco["images"]:
        raise DataError(f"batch {batch!r}: every task of Label Studio project {state.project} was skipped; "
                        "there is nothing to add to the dataset.")
    check_boxes(ws, batch, coco)
    name = labelled_name(batch, state.review)
    target = landing_folder(ws) / name
    if target.exists():
        raise DataError(f"{target} exists already: move it away to pull batch {batch!r} again.")
    ledger(ws).record(name, {"verdict": "labelled", ("reviewed_from" if state.review else "labelled_from"): batch,
                             "images": len(coco["images"]), "labelled": True, "format": "coco",
                             "label_studio_project": state.project})
    with atomic_dir(target) as tmp:
        for image in coco["images"]:
            (tmp / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.path / image["file_name"], tmp / image["file_name"])
        write_json(tmp / ANNOTATIONS_FILE, coco)
        (tmp / ws.params.monitor.manifest).write_text("", encoding="utf-8")
    state.pulled = name
    save_state(ws, state)
    return PullResult(batch, state.project, len(state.tasks), finished, skipped, name, len(coco["annotations"]),
                      len(coco["images"]))
