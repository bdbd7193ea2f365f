"""What retraining on drift does with a batch: a labelled one joins the dataset (copied under
import.batches, where `import` reads it), an unlabelled one gets a list of the images to label.

Before a labelled batch is accepted its classes are checked against the dataset's (a class the dataset lacks is an
error and nothing is accepted) and its labels are audited with the champion (`detops.labeling.audit`). Under
`label.audit: review` the images the audit flags stay out of the accepted copy (then written as COCO, whatever the
batch's format) and go to the batch's review list, which labels-sync sends to Label Studio (`detops.labeling.review`);
under `warn`, and for a batch that is itself such a review, the audit only reports. With no champion yet there
is nothing to audit with: `warn` says so and accepts, `review` refuses. Before acceptance, the champion and the
challenger also score the batch's accuracy share (`detops.monitoring.production`): the flow announces a drop.

The landing folder is the inbox and is never modified; the accepted copy is what DVC versions.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from detops.atomic import atomic_dir, write_text
from detops.errors import DataError, RegistryError
from detops.workspace import Workspace

if TYPE_CHECKING:
    from detops.labeling.audit import Audit
    from detops.monitoring.batches import BatchData


@dataclass(frozen=True)
class BatchOutcome:
    """`accepted` holds the batch's copy in the dataset; otherwise `to_label` lists what needs labels."""

    batch: str
    labelled: bool
    images: list[str]
    accepted: Path | None = None
    to_label: Path | None = None
    review: list[str] = field(default_factory=list)  # flagged by the audit, left out (label.audit: review)
    notes: list[str] = field(default_factory=list)
    production: Path | None = None  # reports/production/<batch>.json: the champion's accuracy on the batch's share


def labels_needed_file(ws: Workspace, batch: str) -> Path:
    return ws.output("monitor", "labels_needed") / f"{batch}.txt"


def accepted_path(ws: Workspace, name: str) -> Path:
    """The accepted copy of batch `name` (under import.batches); it exists once the batch is accepted."""
    return ws.resolve(ws.params.import_.batches) / name


def take_batch(ws: Workspace, name: str) -> BatchOutcome:
    """Accept a labelled batch into the dataset (once: a batch accepted before is left as it is), or write the list
    of its images to label. A batch refused (bad labels, no images) has the reason in its ledger entry as `failed`,
    where `detops status` reads it."""
    from detops.monitoring.batches import ledger

    try:
        return _take(ws, name)
    except (DataError, RegistryError) as exc:
        ledger(ws).update(name, failed=str(exc))
        raise


def _take(ws: Workspace, name: str) -> BatchOutcome:
    from detops.monitoring.batches import find_batch, read_batch

    data = read_batch(ws, find_batch(ws, name))
    files = [str(im["file_name"]) for im in data.dataset["images"]]
    if not files:
        raise DataError(f"batch {name!r}: no readable images in {data.batch.path}.")
    if data.format == "images":
        listing = write_text(labels_needed_file(ws, name),
                             "".join(f"{data.batch.path / f}\n" for f in files))
        return BatchOutcome(name, False, files, to_label=listing)
    target = accepted_path(ws, name)
    from detops.labeling.audit import read_review_list, write_review_list

    if target.exists():  # accepted before: retraining again is enough
        left_out = {r.file_name for r in read_review_list(ws, name)}
        return BatchOutcome(name, True, [f for f in files if f not in left_out], accepted=target)
    check_batch_classes(ws, data)
    from detops.monitoring.production import score_batch

    production, notes = score_batch(ws, data)
    audit, audit_notes = _audit(ws, data)
    notes += audit_notes
    reviewed = reviewed_from(ws, name)
    sends_back = audit is not None and ws.params.label.audit == "review" and reviewed is None
    review = [i.file_name for i in audit.flagged] if audit is not None and sends_back else []
    if audit is not None and sends_back:
        listing = write_review_list(ws, name, audit)
        notes.append(f"{len(review)} image(s) sent back for review, left out: {ws.relative(listing)}")
    elif reviewed is not None:
        notes.append(f"reviewed in Label Studio (labels of {reviewed} the audit flagged): reported, none left out")
    if len(review) == len(files):
        raise DataError(f"batch {name!r}: the label audit flagged all {len(files)} images (label.review_threshold="
                        f"{ws.params.label.review_threshold}); nothing accepted. See {audit_notes[0]}.")
    kept = [f for f in files if f not in set(review)]
    from detops.monitoring.production import share_of
    from detops.monitoring.share import write_share_list

    share, _ = share_of(ws, data)
    with atomic_dir(target) as tmp:
        if review:
            _copy_without(ws, data, set(review), tmp)
        else:
            shutil.copytree(data.batch.path, tmp, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(ws.params.monitor.manifest))
        if share is not None:
            write_share_list(tmp, share, kept)
    return BatchOutcome(name, True, kept, accepted=target, review=review, notes=notes, production=production)


def reviewed_from(ws: Workspace, name: str) -> str | None:
    """The batch whose flagged labels `name` is the review of (a person looked twice), or None."""
    from detops.monitoring.batches import ledger

    origin = ledger(ws).entries().get(name, {}).get("reviewed_from")
    return str(origin) if origin else None


def check_batch_classes(ws: Workspace, data: BatchData) -> None:
    """ClassSetMismatch naming the batch's classes the dataset (data/prepared/dataset.json) lacks; nothing is
    accepted."""
    from detops.dataset.canonical import read_dataset
    from detops.dataset.classes import check_classes

    if not ws.dataset_json.is_file():
        return  # no dataset yet: the champion's classes are checked by the audit
    check_classes((str(c["name"]) for c in data.dataset["categories"]),
                  (str(c["name"]) for c in read_dataset(ws.dataset_json)["categories"]),
                  who=f"batch {data.batch.name!r}", ref="the dataset", ref_file=ws.relative(ws.dataset_json),
                  fix="Relabel the batch with the dataset's class names, or add the classes to the dataset first; "
                      "nothing was accepted.")


def _audit(ws: Workspace, data: BatchData) -> tuple[Audit | None, list[str]]:
    """The batch's label audit and where it was written; None (and why) with no champion under `warn`."""
    from detops.labeling.audit import audit_files, run_audit

    try:
        audit = run_audit(ws, data.dataset, f"batch {data.batch.name}", data.batch.name)
    except RegistryError as exc:
        if ws.params.label.audit == "review":
            raise
        return None, [f"labels not audited: {exc}"]
    page = ws.relative(audit_files(ws, data.batch.name)[1])
    return audit, [f"label audit: {page} ({len(audit.flagged)} of {len(audit.images)} image(s) below "
                   f"{audit.threshold:g})"]


def _copy_without(ws: Workspace, data: BatchData, left_out: set[str], out: Path) -> None:
    """The batch minus `left_out` as COCO (annotations.json and the images at their relative paths)."""
    from detops.dataset.canonical import image_path, subset
    from detops.formats.coco import write_coco

    keep = subset(data.dataset, [im["id"] for im in data.dataset["images"] if im["file_name"] not in left_out])
    write_coco(keep, {int(im["id"]): image_path(keep, im, ws.root) for im in keep["images"]}, out)
