"""`detops label pull BATCH`: the finished annotations of a pushed batch become a labelled batch in the landing
folder, which retraining accepts as it accepts any labelled batch.

Label Studio's JSON export gives each box in percent of the image; it is converted to COCO pixels with the image's
own size (the batch's image entry, as push used), and Label Studio's `original_width` / `original_height`, when a
result has them, must agree with it. A task is finished when it has an annotation that was not skipped (the latest
one counts); a task whose every annotation was skipped leaves its image out. Until every task is finished, nothing
is written: a half-labelled batch would enter the dataset with its missing boxes read as background.

Nothing is dropped without a word: a result that is not a box at all (another control's) is left out and named in
the pull's report (task id, reason); a box that cannot be read as drawn (rotated, on a rotated image, with no label,
of a class the dataset lacks, drawn on an image of another size) refuses the pull, naming each one, since taking the
rest would leave that object unlabelled.

The writes, in this order, each one safe to repeat, so a pull stopped at any point is finished by the next one
(no directory rename: the next issue keeps this state in object storage):
  1. the ledger entry of the labelled batch `<batch>-labelled` (`<batch>-reviewed` for a review of flagged labels),
     which is also the pull's report (images, boxes, dropped results): the drift check then never announces the
     batch as new data, and a folder of that name is known to be this pull's;
  2. the batch folder: the images, `annotations.json`, then the manifest last (a folder without it is not a batch
     yet, and the next pull writes it again from scratch; one with it is kept as written);
  3. the round trip's state, marked pulled.
Acceptance is not the pull's: labels-sync announces (`detops.batch.labelled`) every pulled batch retraining has not
accepted yet, on every tick, so a lost event or a crash before it is announced again, and `retrain-on-drift`, which
accepts a batch once however often it is announced, stays the one place a batch is accepted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detops.atomic import write_json
from detops.dataset.canonical import Dataset, category_names, read_dataset
from detops.dataset.classes import class_mismatch
from detops.errors import DataError
from detops.labeling.labelconfig import Refused, result_to_box
from detops.labeling.state import RoundTrip, load_state, round_trips, save_state
from detops.labeling.studio import LabelStudio
from detops.workspace import Workspace

LABELLED_SUFFIX, REVIEWED_SUFFIX = "-labelled", "-reviewed"
ANNOTATIONS_FILE = "annotations.json"
SHOWN = 20  # results listed in a refusal; the count says how many more


@dataclass(frozen=True)
class Dropped:
    """A Label Studio result that did not become a box, and why."""

    task: int
    file_name: str
    reason: str

    def __str__(self) -> str:
        return f"task {self.task} ({self.file_name}): {self.reason}"


@dataclass(frozen=True)
class PullResult:
    """`labelled` is the batch written (None while tasks are pending); `dropped` the results left out."""

    batch: str
    project: int
    tasks: int
    finished: int
    skipped: int
    labelled: str | None = None
    boxes: int = 0
    images: int = 0
    dropped: tuple[str, ...] = ()


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


@dataclass
class Converted:
    """The finished tasks as COCO, the tasks finished and skipped, and the results that did not become boxes:
    `dropped` are left out (not boxes), `refused` stop the pull (boxes that cannot be read as drawn)."""

    coco: Dataset
    finished: int = 0
    skipped: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    refused: list[Dropped] = field(default_factory=list)


def to_coco(batch: str, state: RoundTrip, export: list[dict[str, Any]], images: Dataset,
            classes: dict[int, str]) -> Converted:
    """The finished tasks as COCO, each box scaled with its image's own size; DataError naming every box that cannot
    be taken (with its task id), classes the dataset lacks included."""
    by_id = {int(t["id"]): t for t in export}
    by_name = {str(im["file_name"]): im for im in images["images"]}
    class_ids = {name: cid for cid, name in classes.items()}
    out = Converted({"images": [], "annotations": [],
                     "categories": [{"id": cid, "name": name} for cid, name in sorted(classes.items())]})
    coco = out.coco
    unknown: dict[str, list[str]] = {}
    for file_name, task_id in state.tasks.items():
        task = by_id.get(task_id)
        if task is None:
            raise DataError(f"batch {batch!r}: task {task_id} of {file_name} is gone from Label Studio project "
                            f"{state.project}; push the batch again to recreate it.")
        annotation = finished_annotation(task)
        if annotation is None:
            out.skipped += was_skipped(task)
            continue
        out.finished += 1
        image = dict(by_name[file_name], id=len(coco["images"]) + 1)
        coco["images"].append(image)
        for result in annotation.get("result") or []:
            converted = result_to_box(result, int(image["width"]), int(image["height"]))
            if isinstance(converted, Refused):
                (out.refused if converted.loses_a_box else out.dropped).append(
                    Dropped(task_id, file_name, converted.reason))
                continue
            box, labels = converted
            for label in labels:
                if label not in class_ids:
                    unknown.setdefault(label, []).append(file_name)
                    out.refused.append(Dropped(task_id, file_name, f"a box of class {label!r}, which the dataset "
                                                                   "lacks"))
                    continue
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image["id"],
                                            "category_id": class_ids[label], "bbox": box,
                                            "area": box[2] * box[3], "iscrowd": 0})
    if out.refused:
        mismatch = class_mismatch(unknown.keys(), classes.values(), who="Its boxes", ref="the dataset",
                                  examples={name: files[0] for name, files in unknown.items()},
                                  fix="Fix those boxes (or add the class to the dataset).")
        classes_part = f" {mismatch}" if mismatch else ""
        raise DataError(f"batch {batch!r}: {len(out.refused)} result(s) in Label Studio project {state.project} "
                        f"cannot be taken as boxes.{classes_part} Fix them in Label Studio, then pull again. Nothing "
                        f"was written.\n{listing(out.refused)}")
    return out


def listing(results: list[Dropped]) -> str:
    """One line per result, the first SHOWN, then how many more."""
    more = f"\n  ... and {len(results) - SHOWN} more" if len(results) > SHOWN else ""
    return "\n".join(f"  {one}" for one in results[:SHOWN]) + more


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
    """Write the labelled batch once every task is finished (resuming a pull that stopped half-way); report the
    progress otherwise."""
    from detops.monitoring.batches import batch_folders, find_batch, landing_folder, ledger, read_batch
    from detops.monitoring.landing import landing_location, open_store

    state = load_state(ws, batch)
    if state is None:
        raise DataError(f"batch {batch!r} was never pushed to Label Studio: run `detops label push {batch}` first.")
    if state.pulled:
        return pulled_report(ws, state)
    source = find_batch(ws, batch)
    export = studio.export(state.project)
    data = read_batch(ws, source)
    classes = category_names(read_dataset(ws.output("import", "dataset")))
    done = to_coco(batch, state, export, data.dataset, classes)
    dropped = tuple(str(one) for one in done.dropped)
    coco = done.coco
    if done.finished + done.skipped < len(state.tasks):
        return PullResult(batch, state.project, len(state.tasks), done.finished, done.skipped, dropped=dropped)
    if not coco["images"]:
        raise DataError(f"batch {batch!r}: every task of Label Studio project {state.project} was skipped; "
                        "there is nothing to add to the dataset.")
    check_boxes(ws, batch, coco)
    name = labelled_name(batch, state.review)
    target = landing_folder(ws) / name
    origin = "reviewed_from" if state.review else "labelled_from"
    ours = ledger(ws).entries().get(name, {}).get(origin) == batch
    location, manifest = landing_location(ws), ws.params.monitor.manifest
    if name in batch_folders(ws) and not ours:
        raise DataError(f"{location}/{name} exists already: move it away to pull batch {batch!r} again.")
    written = open_store(location).is_sealed(name, manifest) if isinstance(location, str) \
        else (target / manifest).is_file()
    if not (ours and written):  # else 1 and 2 were done: on to 3
        ledger(ws).record(name, {origin: batch, "images": len(coco["images"]),
                                 "boxes": len(coco["annotations"]), "skipped": done.skipped,
                                 "dropped": list(dropped), "labelled": True, "format": "coco",
                                 "label_studio_project": state.project})
        write_batch(ws, source.path, target, coco)
        if isinstance(location, str):  # the copy here is what a reader of the store would fetch
            open_store(location).put(target, name, manifest)
    state.pulled = name
    save_state(ws, state)
    return pulled_report(ws, state)


def write_batch(ws: Workspace, source: Path, target: Path, coco: Dataset) -> None:
    """The labelled batch at `target`, written in place (no rename): what an earlier attempt left is removed, the
    manifest comes last."""
    if target.exists():
        shutil.rmtree(target)
    for image in coco["images"]:
        (target / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / image["file_name"], target / image["file_name"])
    write_json(target / ANNOTATIONS_FILE, coco)
    (target / ws.params.monitor.manifest).write_text("", encoding="utf-8")


def pulled_report(ws: Workspace, state: RoundTrip) -> PullResult:
    """What the pull of a pulled batch wrote, from its ledger entry."""
    from detops.monitoring.batches import ledger

    assert state.pulled is not None, "only a pulled batch has a report"
    entry = ledger(ws).entries().get(state.pulled, {})
    images = int(entry.get("images", 0))
    return PullResult(state.batch, state.project, len(state.tasks), images, int(entry.get("skipped", 0)),
                      state.pulled, int(entry.get("boxes", 0)), images, tuple(entry.get("dropped") or ()))


def unaccepted(ws: Workspace) -> list[PullResult]:
    """The batches pulled that retraining has not accepted yet (their announcement may have been lost)."""
    from detops.monitoring.accept import accepted_path

    return [pulled_report(ws, state) for state in round_trips(ws)
            if state.pulled is not None and not accepted_path(ws, state.pulled).exists()]
