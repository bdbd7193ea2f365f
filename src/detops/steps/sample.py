"""Step `sample`: (re)write the synthetic dataset under `<paths.raw>/<sample.name>/` as one atomic swap."""

from __future__ import annotations

import json
from collections import Counter

from detops.atomic import atomic_dir
from detops.sample.generate import ANNOTATIONS_FILE, generate_sample
from detops.steps.result import StepResult
from detops.workspace import Workspace


def run(ws: Workspace) -> StepResult:
    params = ws.params.sample
    target = ws.output("sample", "dataset")
    with atomic_dir(target) as tmp:
        generate_sample(tmp, params)
    coco = json.loads((target / ANNOTATIONS_FILE).read_text(encoding="utf-8"))
    per_class = Counter(a["category_id"] for a in coco["annotations"])
    metrics: dict[str, int] = {
        "images": len(coco["images"]),
        "boxes": len(coco["annotations"]),
        "classes": len(coco["categories"]),
    }
    metrics |= {f"boxes/{c['name']}": per_class[c["id"]] for c in coco["categories"]}
    return StepResult(
        step="sample",
        outputs={"dataset": ws.relative(target), "annotations": ws.relative(target / ANNOTATIONS_FILE)},
        metrics=metrics,
    )
