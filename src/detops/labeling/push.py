"""`detops label push BATCH`: an unlabelled batch becomes a Label Studio project of tasks, pre-annotated by a model.

The project is titled `<label_studio.project_prefix> <batch>` and found again by that title; its labelling config is
generated from the dataset's classes (and updated when they change). Images are shown to labellers straight from the
landing folder through a Local Storage on the batch folder, never copied or modified. Tasks are imported in ranked
order (the ranking `detops label select` wrote, else file order) with the model's boxes as predictions whose
`model_version` is the registry version. Label Studio does not de-duplicate imports, so each task carries its image's
file name and the task id of each image is kept in the round trip's state file: pushing again imports only the
images that have no task yet.

Besides the ranked images, a random share of the batch (`label.accuracy_share` of its images, drawn from those the
ranking did not choose, seeded by the batch's name) is pushed last and without pre-annotations: the ranking picks
what the champion is least sure of and labellers anchor on its boxes, so only this share measures the champion on
its traffic without bias (`detops.monitoring.production`). The share is recorded once, in the round trip's state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from detops.dataset.canonical import Dataset, category_names, image_path, read_dataset
from detops.dataset.classes import check_classes
from detops.errors import DataError
from detops.labeling.labelconfig import IMAGE, box_to_result, label_config
from detops.labeling.state import RoundTrip, load_state, save_state
from detops.labeling.studio import LabelStudio
from detops.workspace import Workspace


@dataclass(frozen=True)
class Preannotator:
    """A loaded model and the version Label Studio shows for its predictions."""

    predictor: Any  # detops.inference.Predictor (loaded lazily: torch is heavy)
    model_version: str


@dataclass(frozen=True)
class PushResult:
    batch: str
    project: int
    url: str
    imported: int
    already: int
    model_version: str


def dataset_classes(ws: Workspace) -> list[str]:
    """The class names of the imported dataset, in category id order: what labellers may draw."""
    names = category_names(read_dataset(ws.output("import", "dataset")))
    if not names:
        raise DataError(f"{ws.output('import', 'dataset')}: the dataset has no categories to label with.")
    return [names[i] for i in sorted(names)]


def project_title(ws: Workspace, batch: str) -> str:
    return f"{ws.params.label_studio.project_prefix} {batch}"


def served_path(ws: Workspace, path: Path) -> str:
    """`path` relative to the server's document root, as `/data/local-files/?d=` wants it."""
    root = ws.resolve(ws.params.label_studio.document_root).resolve()
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        raise DataError(f"{path} is not below label_studio.document_root ({root}): Label Studio serves local "
                        "files only from below its LOCAL_FILES_DOCUMENT_ROOT. Set label_studio.document_root to the "
                        "server's document root.") from None


def ranked_images(ws: Workspace, batch: str, dataset: Dataset) -> list[dict[str, Any]]:
    """The batch's images in the order labellers should see them: the selection's ranking, else file order."""
    by_name = {str(im["file_name"]): im for im in dataset["images"]}
    order = ranking(ws, batch)
    if order is None:
        return sorted(dataset["images"], key=lambda im: str(im["file_name"]))
    missing = [name for name in order if name not in by_name]
    if missing:
        raise DataError(f"batch {batch!r}: the ranking names {len(missing)} image(s) the batch lacks, e.g. "
                        f"{missing[0]!r}; run `detops label select {batch}` again.")
    return [by_name[name] for name in order]


def ranking(ws: Workspace, batch: str) -> list[str] | None:
    """The image file names `detops label select` chose for the batch, best first; None before a selection."""
    from detops.labeling.select import SELECTION, read_selection, selection_folder

    if not (selection_folder(ws, batch) / SELECTION).is_file():
        return None
    return [image.file_name for image in sorted(read_selection(ws, batch), key=lambda image: image.rank)]


def task(ws: Workspace, dataset: Dataset, image: dict[str, Any], rank: int, **extra: Any) -> dict[str, Any]:
    path = image_path(dataset, image, ws.root)
    return {"data": {IMAGE: f"/data/local-files/?d={served_path(ws, path)}", "file_name": image["file_name"],
                     "rank": rank, **extra}}


def predictions(pre: Preannotator, ws: Workspace, dataset: Dataset, images: list[dict[str, Any]],
                classes: list[str]) -> list[list[dict[str, Any]]]:
    """One prediction per image: the model's boxes as RectangleLabels results, with its mean box score."""
    names = pre.predictor.meta.class_names
    check_classes(names, classes, who=f"the pre-annotating model ({pre.model_version})", ref="the dataset",
                  ref_file=ws.relative(ws.output("import", "dataset")),
                  fix="Push with a model trained on this dataset's classes (label.model, or --model).")
    paths = [image_path(dataset, im, ws.root) for im in images]
    out = []
    detections = pre.predictor.predict(paths, ws.params.predict.batch_size)
    for image, det in zip(images, detections, strict=True):
        results = [box_to_result((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), names[int(label)],
                                 int(image["width"]), int(image["height"]), float(score))
                   for (x1, y1, x2, y2), score, label in zip(det.boxes, det.scores, det.labels, strict=True)]
        score = float(det.scores.mean()) if len(det) else 0.0
        out.append([{"model_version": pre.model_version, "score": score, "result": results}])
    return out


def ensure_project(ws: Workspace, studio: LabelStudio, batch: str, classes: list[str], description: str) -> int:
    """The batch's project, created or brought up to date (config, local storage on the batch folder)."""
    from detops.monitoring.batches import find_batch

    title = project_title(ws, batch)
    config = label_config(classes)
    project = studio.find_project(title)
    if project is None:
        project = studio.create_project(title, config, description)
    elif project.get("label_config") != config:
        studio.update_project(int(project["id"]), label_config=config)
    project_id = int(project["id"])
    folder = str(find_batch(ws, batch).path.resolve())
    served_path(ws, Path(folder))  # below the document root, or Label Studio refuses the storage
    if not any(os.path.normpath(s.get("path", "")) == folder for s in studio.local_storages(project_id)):
        studio.add_local_storage(project_id, folder, f"batch {batch}")
    return project_id


def push(ws: Workspace, batch: str, studio: LabelStudio, pre: Preannotator | None) -> PushResult:
    """Import the batch's images that have no task yet, in ranked order, with predictions when `pre` is given."""
    from detops.monitoring.batches import find_batch, read_batch

    data = read_batch(ws, find_batch(ws, batch))
    if data.format != "images":
        raise DataError(f"batch {batch!r} is labelled already ({data.format}); only unlabelled batches are pushed.")
    classes = dataset_classes(ws)
    preannotate = None if pre is None else partial(predictions, pre, ws, data.dataset, classes=classes)
    ranked = ranked_images(ws, batch, data.dataset)
    share = accuracy_share(ws, batch, data.dataset, ranked)
    by_name = {str(im["file_name"]): im for im in data.dataset["images"]}
    images = [im for im in ranked if str(im["file_name"]) not in set(share)] + [by_name[name] for name in share]
    return import_tasks(ws, studio, Tasks(batch, data.dataset, images, classes,
                                          f"detops batch {batch}: images to label, pre-annotated.", preannotate,
                                          pre.model_version if pre else "", share=share))


def accuracy_share(ws: Workspace, batch: str, dataset: Dataset, ranked: list[dict[str, Any]]) -> list[str]:
    """The batch's accuracy share: the one its state recorded, else `label.accuracy_share` of its images drawn at
    random (seeded by the batch name) from those outside the ranking's choice (all of them without a selection)."""
    import hashlib

    import numpy as np

    previous = load_state(ws, batch)
    if previous is not None and previous.accuracy_share:
        return previous.accuracy_share
    chosen = set(ranking(ws, batch) or [])
    candidates = sorted(str(im["file_name"]) for im in dataset["images"] if str(im["file_name"]) not in chosen)
    wanted = min(len(candidates), round(ws.params.label.accuracy_share * len(dataset["images"])))
    seed = int.from_bytes(hashlib.sha256(batch.encode()).digest()[:8], "big")
    picked = np.random.default_rng(seed).choice(len(candidates), size=wanted, replace=False)
    return [candidates[int(i)] for i in sorted(picked)]


@dataclass(frozen=True)
class Tasks:
    """What a push imports: `images` of `dataset` in rank order, each task's extra data fields by file name, and
    the pre-annotations of a list of images (None: no pre-annotations)."""

    batch: str
    dataset: Dataset
    images: list[dict[str, Any]]
    classes: list[str]
    description: str
    preannotate: Callable[[list[dict[str, Any]]], list[list[dict[str, Any]]]] | None
    model_version: str
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    review: bool = False
    share: list[str] = field(default_factory=list)  # the accuracy share: pushed without pre-annotations


def import_tasks(ws: Workspace, studio: LabelStudio, todo: Tasks) -> PushResult:
    """Import the images that have no task in the batch's project yet, in rank order; keep each one's task id."""
    project = ensure_project(ws, studio, todo.batch, todo.classes, todo.description)
    previous = load_state(ws, todo.batch)
    # The project's own tasks say which images have one: a push cut short after Label Studio imported, but before
    # the state file was written, imports nothing twice either.
    state = RoundTrip(todo.batch, project, studio.tasks_by_file(project),
                      previous.pulled if previous is not None and previous.project == project else None, todo.review,
                      todo.share)
    new = [(rank, im) for rank, im in enumerate(todo.images, 1) if str(im["file_name"]) not in state.tasks]
    tasks = [task(ws, todo.dataset, im, rank, **todo.extra.get(str(im["file_name"]), {})) for rank, im in new]
    annotated = [(one, im) for one, (_, im) in zip(tasks, new, strict=True) if str(im["file_name"]) not in todo.share]
    if todo.preannotate is not None and annotated:
        for (one, _), preds in zip(annotated, todo.preannotate([im for _, im in annotated]), strict=True):
            one["predictions"] = preds
    ids = studio.import_tasks(project, tasks) if tasks else []
    state.tasks.update({str(im["file_name"]): task_id for (_, im), task_id in zip(new, ids, strict=True)})
    save_state(ws, state)
    return PushResult(todo.batch, project, f"{studio.url}/projects/{project}", len(ids), len(todo.images) - len(ids),
                      todo.model_version)


def batches_to_push(ws: Workspace) -> list[str]:
    """Batches retrain-on-drift found unlabelled (a labels_needed list) that were never pushed, by name."""
    folder = ws.output("monitor", "labels_needed")
    names = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    return [name for name in names if load_state(ws, name) is None]


def preannotator(ws: Workspace) -> Preannotator:
    """The labelling loop's model (`detops.labeling.model`: label.model; empty: the champion), its registry version
    as `model_version` (a file: its name). RegistryError when there is no champion."""
    from detops.inference.loading import load_predictor
    from detops.labeling.model import labelling_model

    with labelling_model(ws) as model:
        predictor = load_predictor(model.path).with_thresholds(score_threshold=ws.params.predict.score_threshold)
    return Preannotator(predictor, model.version)
