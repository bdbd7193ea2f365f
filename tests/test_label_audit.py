"""The label audit: cleanlab's score as cleanlab computes it, planted errors ranked on top (by an oracle's
predictions, and by a trained model's through `run_audit`), `label.audit: review` leaving flagged images out of
the accepted batch, and a batch with classes the dataset lacks refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _files import tree_bytes
from _labelling_model import CLASSES, easy_sample
from _monitoring_fixtures import batch_from, workspace

from detops.dataset.canonical import write_dataset
from detops.errors import DataError
from detops.labeling.audit import class_indices, label_boxes, read_review_list
from detops.labeling.inject import KINDS, inject_errors
from detops.labeling.quality import ISSUES, LabelBoxes, label_quality, per_class

REPO = Path(__file__).resolve().parents[1]
IMAGES = 24


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, labelling_model: Path) -> Iterator[Path]:
    """A workspace with samples of the labelling model's distribution to make batches of (seed 1: 24 images, seed
    2: 60), the trained checkpoint as its labelling model."""
    root = tmp_path_factory.mktemp("audit")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    easy_sample(root / "seed1", seed=1, num_images=IMAGES)
    easy_sample(root / "seed2", seed=2, num_images=60)
    yield root


def trained(labelling_model: Path, *overrides: str) -> tuple[str, ...]:
    return (f"label.model={labelling_model}", *overrides)


def _oracle(dataset: dict, seed: int) -> list[list[np.ndarray]]:
    """What a good detector says about the clean labels: each true box, jittered, confidently (0.6-0.9), plus one
    low-score stray box per image."""
    rng = np.random.default_rng(seed)
    index = class_indices(dataset, CLASSES, "clean")
    out = []
    for labels in label_boxes(dataset, index):
        jitter = rng.normal(0, 1.0, labels.boxes.shape)
        boxes = np.vstack([labels.boxes + jitter, [[5, 5, 25, 25]]])
        scores = np.concatenate([rng.uniform(0.6, 0.9, len(labels.boxes)), [0.08]])
        classes = np.concatenate([labels.classes, [int(rng.integers(0, len(CLASSES)))]])
        out.append(per_class(boxes, scores, classes, len(CLASSES)))
    return out


def test_the_score_is_cleanlabs_own_at_its_thresholds() -> None:
    from cleanlab.object_detection.rank import get_label_quality_scores

    rng = np.random.default_rng(0)
    labels, predictions = [], []
    for _ in range(12):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 100, (n, 2))
        boxes = np.hstack([xy, xy + rng.uniform(10, 40, (n, 2))])
        classes = rng.integers(0, 3, n)
        labels.append(LabelBoxes(boxes[1:] if n > 2 else boxes, classes[1:] if n > 2 else classes))
        predictions.append(per_class(boxes + rng.normal(0, 2, boxes.shape), rng.uniform(0.3, 1.0, n), classes, 3))
    ours = label_quality(labels, predictions, confident=0.95, plausible=0.5).scores
    theirs = get_label_quality_scores([lb.to_cleanlab() for lb in labels], predictions, verbose=False)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9)


def test_injected_errors_rank_above_untouched_images(root: Path) -> None:
    ws = workspace(root)
    from detops.dataset.images import probe_images
    from detops.formats import read_source
    from detops.formats.source import to_canonical

    source = read_source("coco", root / "seed1")
    clean, _ = to_canonical(source, probe_images(source.image_paths()), ws.relative(root / "seed1"))
    noisy, kinds = inject_errors(clean, 0.125, seed=3)
    assert sorted(kinds.values()) == sorted(KINDS * 3)
    index = class_indices(noisy, CLASSES, "noisy")
    params = ws.params.label
    quality = label_quality(label_boxes(noisy, index), _oracle(clean, seed=4), params.confident_score,
                            params.plausible_score)
    ranks = np.argsort(np.argsort(quality.scores)) + 1  # 1 = worst
    ids = [int(im["id"]) for im in noisy["images"]]
    injected = [ranks[i] for i, image_id in enumerate(ids) if image_id in kinds]
    untouched = [ranks[i] for i, image_id in enumerate(ids) if image_id not in kinds]
    assert np.mean(injected) < np.mean(untouched), (injected, untouched)
    # each kind is named for most of its images
    named = [quality.issue(ids.index(i), 1.0) for i in kinds]
    right = sum(n == k for n, k in zip(named, kinds.values(), strict=True))
    assert right >= len(kinds) * 2 // 3, list(zip(named, kinds.values(), strict=True))
    assert set(named) <= set(ISSUES)


def test_a_trained_model_ranks_planted_label_errors_above_untouched_images(root: Path, labelling_model: Path
                                                                          ) -> None:
    """The audit end to end (batch, `run_audit`, the trained labelling model's own predictions): a removed box, a
    wrong class and a shifted box in 18 of 60 images put those images well above the untouched ones."""
    from detops.labeling.audit import audit_target, run_audit

    landing = root / "data/landing"
    shutil.rmtree(landing, ignore_errors=True)
    batch = batch_from(root / "seed2", landing, "planted")
    noisy, kinds = inject_errors(json.loads((batch / "annotations.json").read_text()), 0.1, seed=3)
    (batch / "annotations.json").write_text(json.dumps(noisy))
    ws = workspace(root, *trained(labelling_model))
    audit = run_audit(ws, *audit_target(ws, "planted"))

    names = {int(im["id"]): str(im["file_name"]) for im in noisy["images"]}
    planted = {names[i]: kind for i, kind in kinds.items()}
    assert len(planted) == 18 and len(audit.images) == 60
    ranks = {image.file_name: image.rank for image in audit.images}  # 1 = worst label quality
    untouched = np.mean([rank for name, rank in ranks.items() if name not in planted])
    assert np.mean([ranks[name] for name in planted]) < untouched - 5, (sorted(ranks.items()), planted)
    by_kind = {kind: np.mean([ranks[n] for n, k in planted.items() if k == kind]) for kind in KINDS}
    assert sum(rank < untouched for rank in by_kind.values()) >= 2, by_kind  # not one kind carrying the rest
    top = [image.file_name for image in audit.images[: len(planted)]]
    assert sum(name in planted for name in top) > 0.3 * len(planted), top  # more than chance (30 %) would put there


def test_review_leaves_flagged_images_out_of_the_accepted_batch(root: Path, labelling_model: Path) -> None:
    from detops.labeling.audit import audit_target, run_audit
    from detops.monitoring.accept import take_batch

    landing = root / "data/landing"
    shutil.rmtree(landing, ignore_errors=True)
    batch = batch_from(root / "seed1", landing, "labelled")
    before = tree_bytes(batch)
    ws = workspace(root, *trained(labelling_model))
    dataset, source, name = audit_target(ws, "labelled")
    qualities = [i.quality for i in run_audit(ws, dataset, source, name).images]
    threshold = float(np.median(qualities))
    assert min(qualities) < threshold, qualities
    ws = workspace(root, *trained(labelling_model, "label.audit=review", f"label.review_threshold={threshold}"))

    outcome = take_batch(ws, "labelled")

    audit = json.loads((root / "reports/labeling/audits/labelled/label_audit.json").read_text())
    flagged = {i["file_name"] for i in audit["ranking"] if i["flagged"]}
    assert 0 < len(flagged) < IMAGES
    assert set(outcome.review) == flagged == {i.file_name for i in read_review_list(ws, "labelled")}
    accepted = json.loads((outcome.accepted / "annotations.json").read_text())
    kept = {im["file_name"] for im in accepted["images"]}
    assert kept == set(outcome.images) and not kept & flagged and len(kept) + len(flagged) == IMAGES
    kept_ids = {im["id"] for im in accepted["images"]}
    assert accepted["annotations"] and all(a["image_id"] in kept_ids for a in accepted["annotations"])
    assert all((outcome.accepted / f).is_file() for f in kept)
    assert not any((outcome.accepted / f).exists() for f in flagged)
    assert (root / "reports/labeling/audits/labelled/label_audit.html").stat().st_size > 1000
    assert before == tree_bytes(batch)  # the landing batch untouched
    assert take_batch(ws, "labelled").images == outcome.images  # taken again: the accepted copy, as it was


def test_a_batch_with_classes_the_dataset_lacks_is_refused_naming_them(root: Path, labelling_model: Path) -> None:
    from detops.monitoring.accept import take_batch

    landing = root / "data/landing"
    shutil.rmtree(landing, ignore_errors=True)
    batch = batch_from(root / "seed1", landing, "odd", manifest="")
    coco = json.loads((batch / "annotations.json").read_text())
    coco["categories"].append({"id": 99, "name": "hexagon"})
    coco["annotations"][0]["category_id"] = 99
    (batch / "annotations.json").write_text(json.dumps(coco))
    (batch / "_READY").touch()
    ws = workspace(root, *trained(labelling_model))
    dataset = {"info": {"root": "seed1"}, "images": [], "annotations": [],
               "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]}
    write_dataset(ws.dataset_json, dataset)
    try:
        with pytest.raises(DataError, match="hexagon"):
            take_batch(ws, "odd")
    finally:
        ws.dataset_json.unlink()
    assert not (ws.resolve(ws.params.import_.batches) / "odd").exists()
    # without a dataset json, the champion's classes are the check
    with pytest.raises(DataError, match="hexagon"):
        take_batch(ws, "odd")
    assert not (ws.resolve(ws.params.import_.batches) / "odd").exists()
