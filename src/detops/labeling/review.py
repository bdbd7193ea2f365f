"""`label.audit: review` closes its loop in Label Studio: the images the audit flagged in an accepted batch go back
to a project of their own as tasks, worst label quality first, pre-annotated with the labels under review (so the
reviewer corrects rather than redraws) and told the issue the audit suspects. Pulled like any pushed batch, they
come back as `<batch>-reviewed`; a person has then looked twice, so its audit reports and leaves nothing out.
"""

from __future__ import annotations

from typing import Any

from detops.dataset.canonical import Dataset, category_names
from detops.errors import DataError
from detops.labeling.labelconfig import box_to_result
from detops.labeling.push import PushResult, Tasks, dataset_classes, import_tasks
from detops.labeling.studio import LabelStudio
from detops.workspace import Workspace

REVIEW_VERSION = "labels under review"  # what Label Studio shows as the pre-annotations' model version


def pending_reviews(ws: Workspace) -> list[str]:
    """Batches with images sent back for review that are not in Label Studio yet, by name."""
    from detops.labeling.audit import read_review_list, review_folder
    from detops.labeling.state import load_state

    folder = review_folder(ws)
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [name for name in names if read_review_list(ws, name) and load_state(ws, name) is None]


def labels_as_results(dataset: Dataset, image: dict[str, Any], quality: float) -> list[dict[str, Any]]:
    """The image's labels as one Label Studio prediction, scored with their label quality."""
    names = category_names(dataset)
    boxes = [ann for ann in dataset["annotations"] if ann["image_id"] == image["id"]]
    results = [box_to_result((float(x), float(y), float(w), float(h)), names[int(ann["category_id"])],
                             int(image["width"]), int(image["height"]))
               for ann in boxes for x, y, w, h in [ann["bbox"]]]
    return [{"model_version": REVIEW_VERSION, "score": quality, "result": results}]


def push_review(ws: Workspace, batch: str, studio: LabelStudio) -> PushResult:
    """Import the flagged images of the accepted `batch` into the project `<prefix> <batch>` (pushing again adds
    nothing); DataError when the audit sent none back."""
    from detops.labeling.audit import read_review_list, review_file
    from detops.monitoring.batches import find_batch, read_batch

    flagged = read_review_list(ws, batch)
    if not flagged:
        raise DataError(f"batch {batch!r}: no images were sent back for review ({review_file(ws, batch)} is absent "
                        "or empty); `label.audit: review` writes it when the batch is accepted.")
    data = read_batch(ws, find_batch(ws, batch))
    by_name = {str(im["file_name"]): im for im in data.dataset["images"]}
    missing = [r.file_name for r in flagged if r.file_name not in by_name]
    if missing:
        raise DataError(f"batch {batch!r}: the review list names {len(missing)} image(s) the batch lacks, e.g. "
                        f"{missing[0]!r}; was the landing batch changed after it was accepted?")
    images = [by_name[r.file_name] for r in flagged]
    quality = {r.file_name: r.quality for r in flagged}

    def preannotate(todo: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [labels_as_results(data.dataset, im, quality[str(im["file_name"])]) for im in todo]

    extra = {r.file_name: {"issue": r.issue, "label_quality": round(r.quality, 4)} for r in flagged}
    return import_tasks(ws, studio, Tasks(batch, data.dataset, images, dataset_classes(ws),
                                          f"detops batch {batch}: labels the audit flagged, to review (worst "
                                          "first).", preannotate, REVIEW_VERSION, extra, review=True))
