"""The COCOeval engine: faster-coco-eval where installed, pycocotools otherwise; both equal pycocotools' COCOeval
(1e-6) on realistic detections over the sample and BCCD, and the engine's name and version key the evaluate step."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from test_metrics import cocoeval, per_class_ap

from detops.evaluation import map_metric
from detops.evaluation.coco_engine import CocoEngine, coco_engine, engine_named
from detops.evaluation.metrics import SUMMARY_KEYS, compute_coco

ENGINES = ("faster_coco_eval", "pycocotools")


def realistic_detections(gt: dict[str, Any], seed: int, max_per_image: int = 100) -> list[dict[str, Any]]:
    """What a half-trained detector gives: most boxes found with seeded jitter, some missed, some with another
    class, duplicates, false positives anywhere, random scores; at most `max_per_image` per image."""
    rng = np.random.default_rng(seed)
    cats = [int(c["id"]) for c in gt["categories"]]
    sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in gt["images"]}
    per_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in sizes}
    for ann in gt["annotations"]:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = (float(v) for v in ann["bbox"])
        jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
        cat = int(ann["category_id"]) if rng.random() < 0.9 else int(rng.choice(cats))
        for _ in range(1 + int(rng.random() < 0.1)):  # sometimes a duplicate
            per_image[int(ann["image_id"])].append({
                "image_id": int(ann["image_id"]), "category_id": cat,
                "bbox": [x + jitter[0], y + jitter[1], max(0.5, w + jitter[2]), max(0.5, h + jitter[3])],
                "score": float(rng.uniform(0.05, 1.0))})
    for image_id, (width, height) in sizes.items():
        for _ in range(int(rng.integers(0, 5))):  # false positives
            w, h = rng.uniform(2, width / 3), rng.uniform(2, height / 3)
            per_image[image_id].append({
                "image_id": image_id, "category_id": int(rng.choice(cats)),
                "bbox": [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h],
                "score": float(rng.uniform(0.0, 0.6))})
    out = []
    for dets in per_image.values():
        out.extend(sorted(dets, key=lambda d: -d["score"])[:max_per_image])  # what the predictor keeps
    return out


def assert_equals_cocoeval(gt: dict[str, Any], dets: list[dict[str, Any]], engine: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = engine_named(engine)  # type: ignore[arg-type]
    monkeypatch.setattr(map_metric, "coco_engine", lambda: chosen)
    result = compute_coco(gt, dets)
    reference = cocoeval(gt, dets)  # pycocotools, straight from the json

    for key, expected in zip(SUMMARY_KEYS, reference.stats, strict=True):
        got = result.summary[key]
        assert (got is None) if expected < 0 else got == pytest.approx(expected, abs=1e-6), (engine, key)
    assert result.summary["map"] is not None and 0.2 < result.summary["map"] < 0.95  # a non-trivial case
    for class_id, expected_ap in per_class_ap(reference).items():
        assert (result.ap.get(class_id) is None) if expected_ap is None else \
            result.ap[class_id] == pytest.approx(expected_ap, abs=1e-6), (engine, class_id)
    precision50 = reference.eval["precision"][0, :, :, 0, -1]
    for k, class_id in enumerate(reference.params.catIds):
        if (precision50[:, k] > -1).any():
            assert result.pr_curves[class_id] == pytest.approx(precision50[:, k].tolist(), abs=1e-6), class_id


@pytest.fixture(scope="module")
def sample_gt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from detops.config.sample import SampleParams
    from detops.dataset.canonical import read_dataset
    from detops.sample.generate import generate_sample

    root = tmp_path_factory.mktemp("sample")
    return read_dataset(generate_sample(root, SampleParams(num_images=80, image_size=96, max_object_size=48,
                                                            workers=1)))


@pytest.fixture(scope="module")
def bccd_gt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from _requirements import SHARED

    from detops.config import load_params
    from detops.dataset.canonical import read_dataset
    from detops.steps import import_
    from detops.workspace import Workspace

    params = load_params(None, ("import.format=voc", f"import.source={SHARED / 'datasets/bccd/BCCD'}"))
    ws = Workspace.at(tmp_path_factory.mktemp("bccd"), params)
    import_.run(ws)
    return read_dataset(ws.dataset_json)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", [0, 1])
def test_engine_equals_cocoeval_on_the_sample(sample_gt: dict[str, Any], engine: str, seed: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert_equals_cocoeval(sample_gt, realistic_detections(sample_gt, seed), engine, monkeypatch)


@pytest.mark.shared
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_equals_cocoeval_on_bccd(bccd_gt: dict[str, Any], engine: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(bccd_gt["images"]) == 364
    assert_equals_cocoeval(bccd_gt, realistic_detections(bccd_gt, seed=7), engine, monkeypatch)


def test_faster_coco_eval_is_the_engine_where_installed() -> None:
    from importlib import metadata

    assert coco_engine() == CocoEngine("faster_coco_eval", metadata.version("faster-coco-eval"))
    assert map_metric.new_map_metric()._coco_backend.backend == "faster_coco_eval"


def test_pycocotools_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # `import faster_coco_eval` raises ImportError
    coco_engine.cache_clear()
    try:
        assert coco_engine() == CocoEngine("pycocotools", metadata.version("pycocotools"))
        assert map_metric.new_map_metric()._coco_backend.backend == "pycocotools"
    finally:
        coco_engine.cache_clear()


def test_engine_name_and_version_key_the_evaluate_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from detops import codegraph
    from detops.pipeline import code_fingerprint
    from detops.steps.graph import STEPS

    step = STEPS["evaluate"]
    versions = codegraph.library_versions(codegraph.reach(step.module).libraries)
    assert versions["faster_coco_eval"] == f"faster-coco-eval=={metadata.version('faster-coco-eval')}"
    assert versions["pycocotools"] == f"pycocotools=={metadata.version('pycocotools')}"
    before = code_fingerprint(step)
    real = codegraph._version
    monkeypatch.setattr(codegraph, "_version",
                        lambda dist: "faster-coco-eval==0.0" if dist == "faster-coco-eval" else real(dist))
    assert code_fingerprint(step) != before

