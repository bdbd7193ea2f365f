"""Image features, their cache, embeddings, the per-column test and the verdict rule, on small known inputs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from _monitoring_fixtures import tiny_checkpoint, workspace
from PIL import Image, ImageFilter

from detops.config import load_params
from detops.monitoring import features as features_module
from detops.monitoring.drift import column_test
from detops.monitoring.embeddings import Embedder
from detops.monitoring.features import dataset_features, image_features
from detops.monitoring.labels import label_features
from detops.monitoring.pixels import decode_bgr, pixel_features
from detops.monitoring.verdict import DRIFT, NO_DRIFT, decide

REPO = Path(__file__).resolve().parents[1]


def texture(seed: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=(size[1], size[0], 3))
    smooth = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int64)
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


def features_of(image: Image.Image, tmp_path: Path, name: str = "x.png") -> dict[str, float]:
    path = tmp_path / name
    image.save(path)
    data = path.read_bytes()
    return pixel_features(decode_bgr(data, name), len(data))


def test_pixel_features_follow_light_focus_and_size(tmp_path: Path) -> None:
    base = features_of(texture(), tmp_path)
    assert (base["width"], base["height"], base["aspect_ratio"]) == (96, 64, 1.5)
    assert base["file_size"] == (tmp_path / "x.png").stat().st_size
    grey = features_of(Image.new("RGB", (10, 10), (100, 100, 100)), tmp_path)
    assert grey["brightness"] == pytest.approx(100) and grey["contrast"] == 0 and grey["saturation"] == 0
    darker = features_of(Image.fromarray((np.asarray(texture()) // 2).astype(np.uint8)), tmp_path)
    assert darker["brightness"] == pytest.approx(base["brightness"] / 2, rel=0.02)
    assert darker["contrast"] == pytest.approx(base["contrast"] / 2, rel=0.05)
    blurred = features_of(texture().filter(ImageFilter.GaussianBlur(2)), tmp_path)
    assert blurred["sharpness"] < base["sharpness"] / 5
    assert blurred["brightness"] == pytest.approx(base["brightness"], rel=0.01)


def test_label_features_count_size_and_class_mix() -> None:
    dataset = {
        "images": [{"id": 1, "width": 100, "height": 50}, {"id": 2, "width": 100, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 20, 10]},
            {"id": 3, "image_id": 1, "category_id": 9, "bbox": [0, 0, 30, 10]},
        ],
        "categories": [{"id": 7, "name": "car"}, {"id": 9, "name": "bus"}],
    }
    rows = label_features(dataset)
    assert rows[1] == pytest.approx({"box_count": 3, "box_area": 200 / 5000, "class_car": 2 / 3, "class_bus": 1 / 3})
    assert rows[2]["box_count"] == 0
    assert all(math.isnan(rows[2][k]) for k in ("box_area", "class_car", "class_bus"))


def _dataset(folder: Path, names: list[str]) -> dict:
    return {"info": {"root": str(folder)}, "categories": [],
            "images": [{"id": i + 1, "file_name": n, "width": 96, "height": 64} for i, n in enumerate(names)],
            "annotations": []}


def test_features_are_cached_by_content_and_unreadable_images_skipped(tmp_path: Path, monkeypatch) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    ws = workspace(tmp_path, "monitor.workers=2")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        texture(i).save(images / f"{i}.png")
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    dataset = _dataset(images, ["0.png", "1.png", "missing.png", "broken.png", "2.png"])

    first = dataset_features(ws, dataset)
    assert list(first.frame["file_name"]) == ["0.png", "1.png", "2.png"]
    assert len(first.skipped) == 2
    assert any("missing.png" in s and "cannot read" in s for s in first.skipped)
    assert any("broken.png" in s and "unreadable" in s for s in first.skipped)
    assert list((tmp_path / ".cache/detops/features/pixels-v1").rglob("*.json"))

    def no_decoding(data: bytes, where: str) -> np.ndarray:
        raise AssertionError(f"{where} decoded again")

    monkeypatch.setattr(features_module, "decode_bgr", no_decoding)
    cached = dataset_features(ws, _dataset(images, ["0.png", "1.png", "2.png"]))
    assert cached.frame.equals(first.frame)
    texture(9).save(images / "1.png")  # new content, new sha1: a cache miss
    with pytest.raises(AssertionError, match=r"1\.png decoded again"):
        dataset_features(ws, _dataset(images, ["1.png"]))


def test_embeddings_are_pooled_normalised_backbone_features_cached_per_model(tmp_path: Path, monkeypatch) -> None:
    import torch

    from detops.model.preprocess import letterbox, read_rgb
    from detops.monitoring.cache import FeatureCache

    texture().save(tmp_path / "a.png")
    texture().point(lambda v: v // 3).save(tmp_path / "dark.png")
    embedder = Embedder(tiny_checkpoint(tmp_path / "a.ckpt", ["x"]))
    cache = FeatureCache(tmp_path / "cache")
    out = image_features([tmp_path / "a.png", tmp_path / "dark.png"], cache, 1, embedder)
    assert out[0].embedding is not None and out[1].embedding is not None
    assert out[0].embedding.shape == (512,)  # resnet18's deepest map, average-pooled
    assert not np.allclose(out[0].embedding, out[1].embedding)

    # What the detector's own forward feeds its backbone: the letterboxed image, normalised by the detector.
    model = embedder.model
    x = torch.from_numpy(letterbox(read_rgb(tmp_path / "a.png"), 64)[0]).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        expected = model.backbone((x - model.mean) / model.std)[-1].mean(dim=(2, 3))[0].numpy()
        unnormalised = model.backbone(x)[-1].mean(dim=(2, 3))[0].numpy()
    assert np.allclose(out[0].embedding, expected, atol=1e-4)
    assert not np.allclose(out[0].embedding, unnormalised, atol=1e-2)

    monkeypatch.setattr(Embedder, "__call__", lambda self, images: pytest.fail("embedded again"))
    again = image_features([tmp_path / "a.png"], cache, 1, embedder)
    assert again[0].embedding is not None and np.array_equal(again[0].embedding, out[0].embedding)
    other = Embedder(tiny_checkpoint(tmp_path / "b.ckpt", ["x", "y"]))  # another model version: not the cached one
    assert other.version != embedder.version
    with pytest.raises(pytest.fail.Exception, match="embedded again"):
        image_features([tmp_path / "a.png"], cache, 1, other)


def test_per_column_tests_override_the_default_by_name_or_glob() -> None:
    params = load_params(None, ["monitor.per_column={file_size: {method: psi, threshold: 0.2}, "
                                "'class_*': {method: wasserstein, threshold: 0.3}}"]).monitor
    assert column_test("file_size", params) == ("psi", 0.2)
    assert column_test("class_car", params) == ("wasserstein", 0.3)
    assert column_test("brightness", params) == ("ks", 0.001)


def test_the_verdict_rule() -> None:
    params = load_params(None).monitor
    assert decide([], 14, 0.0, params)[0] == NO_DRIFT
    assert decide(["file_size"], 14, 1 / 14, params) == (
        NO_DRIFT, "1 of 14 column(s) drifted (share 0.07 < drift_share 0.5) and none of them is critical")
    assert decide(["class_car"], 14, 1 / 14, params) == (DRIFT, "1 of 14 column(s) drifted, critical: class_car")
    many = ["file_size", "aspect_ratio"]
    assert decide(many, 4, 0.5, params)[0] == DRIFT
    assert decide(["brightness"], 14, 1 / 14, load_params(None, ["monitor.critical_columns=[]"]).monitor)[0] == NO_DRIFT
