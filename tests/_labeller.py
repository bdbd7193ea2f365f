"""The labeller's side of Label Studio in the tests: its REST API with the user's token, the generator's boxes as
what a careful labeller draws, and a labelling session that accepts some pre-annotations, corrects others, adds a
missed box and skips the rest.

The results are built as Label Studio's frontend submits them, from its documented result format (`value`: x, y,
width, height in percent of the image, rotation, rectanglelabels; `original_width` / `original_height`: the image's
natural size; `image_rotation`; `from_name` / `to_name`: the control and object names of the labelling config),
never with detops' own converters, so a mistake made in both (a width / height swap) cannot cancel out."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _label_studio_server import Server

from detops.labeling.push import Preannotator

TOLERANCE = 1e-6  # px: percent -> pixels and back loses nothing but float rounding
CONTROL, OBJECT = "label", "image"  # the RectangleLabels and Image names of a detops project's labelling config
Size = int | tuple[int, int]  # an image's width and height (one number: a square)


def api(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    """Label Studio's REST API with the user's token; the call must succeed."""
    response = httpx.request(method, server.url + path, headers={"Authorization": f"Token {server.token}"},
                             timeout=30, **kwargs)
    assert response.is_success, f"{method} {path}: {response.status_code} {response.text[:500]}"
    return response.json() if response.content else None


def submit(server: Server, task: int, results: list[dict[str, Any]], skipped: bool = False) -> int:
    return int(api(server, "POST", f"/api/tasks/{task}/annotations/",
                   json={"result": results, "was_cancelled": skipped, "lead_time": 3.5})["id"])


def truth(annotations: Path) -> dict[str, list[list[Any]]]:
    """The generator's boxes of each image of a COCO file ([x, y, w, h, class name]): what a careful labeller draws."""
    coco = json.loads(annotations.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    boxes: dict[str, list[list[Any]]] = {name: [] for name in files.values()}
    for ann in coco["annotations"]:
        boxes[files[ann["image_id"]]].append([*ann["bbox"], names[ann["category_id"]]])
    return boxes


def few_boxes(pre: Preannotator, paths: list[Path]) -> Preannotator:
    """The untrained model scores everything alike: keep about its three best boxes per image."""
    scores = [np.sort(d.scores)[-3] for d in pre.predictor.with_thresholds(score_threshold=0.0).predict(paths)]
    return Preannotator(pre.predictor.with_thresholds(score_threshold=float(np.median(scores))), pre.model_version)


def frontend_result(xywh: Any, label: str | None, size: Size, rotation: float = 0.0, image_rotation: int = 0
                    ) -> dict[str, Any]:
    """A box drawn on an image of `size` pixels as Label Studio's frontend submits it (`label` None: a box whose
    label was taken off)."""
    width, height = dimensions(size)
    x, y, w, h = (float(v) for v in xywh)
    return {"id": uuid.uuid4().hex[:10], "type": "rectanglelabels", "from_name": CONTROL, "to_name": OBJECT,
            "origin": "manual", "original_width": width, "original_height": height, "image_rotation": image_rotation,
            "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width,
                      "height": 100 * h / height, "rotation": rotation,
                      "rectanglelabels": [] if label is None else [label]}}


def accepted_as_drawn(prediction: dict[str, Any], size: Size) -> dict[str, Any]:
    """A pre-annotated box the labeller accepts: the frontend submits the region's percent values again, with the
    natural size of the image it shows."""
    width, height = dimensions(size)
    return {"id": uuid.uuid4().hex[:10], "type": prediction["type"], "from_name": prediction["from_name"],
            "to_name": prediction["to_name"], "origin": "prediction", "original_width": width,
            "original_height": height, "image_rotation": 0, "value": dict(prediction["value"])}


def dimensions(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def pixel_boxes(results: list[dict[str, Any]], size: Size) -> list[list[Any]]:
    """The axis-aligned boxes of `results` in pixels of an image of `size` ([x, y, w, h, label] per label)."""
    width, height = dimensions(size)
    out = []
    for result in results:
        value = result["value"]
        assert result["type"] == "rectanglelabels" and not value.get("rotation"), result
        box = [value["x"] * width / 100, value["y"] * height / 100, value["width"] * width / 100,
               value["height"] * height / 100]
        out += [[*box, label] for label in value["rectanglelabels"]]
    return sorted(out, key=lambda b: (b[4], b[0], b[1]))


def same_boxes(got: list[list[Any]], expected: list[list[Any]]) -> bool:
    got, expected = sorted(got, key=lambda b: (b[4], b[0], b[1])), sorted(expected, key=lambda b: (b[4], b[0], b[1]))
    return len(got) == len(expected) and all(
        g[4] == e[4] and np.allclose(g[:4], e[:4], atol=TOLERANCE) for g, e in zip(got, expected, strict=True))


def label_like_a_person(server: Server, tasks: list[tuple[str, int]], labels: dict[str, list[list[Any]]],
                        size: Size) -> dict[str, list[list[Any]]]:
    """Annotate `tasks` (file name, task id; images of `size` pixels) in rank order: the first 10 accept the
    pre-annotations, up to the 40th every box is redrawn, up to the 48th a missed box is added to the accepted ones,
    the rest are skipped. Returns the boxes each annotated image should come back with (pixels)."""
    expected: dict[str, list[list[Any]]] = {}

    def truth_results(name: str) -> list[dict[str, Any]]:
        return [frontend_result(b[:4], b[4], size) for b in labels[name]]

    for i, (name, task) in enumerate(tasks):
        predicted = api(server, "GET", "/api/predictions/", params={"task": task})
        accepted = [accepted_as_drawn(one, size) for one in (predicted[0]["result"] if predicted else [])]
        if i < 10:  # the pre-annotations are right: accepted as they are
            results = accepted
        elif i < 40:  # corrected: the labeller redraws every box
            results = truth_results(name)
        elif i < 48:  # accepted, plus a box the model missed
            results = [*accepted, truth_results(name)[0]]
        else:  # skipped: the image is left out
            submit(server, task, [], skipped=True)
            continue
        submit(server, task, results)
        expected[name] = pixel_boxes(results, size)
    return expected
