"""The torch-free inference path: numpy decode and NMS equal torchvision's, the cv2 letterbox equals the
albumentations one training uses, metadata round-trips, and bad model files fail clearly."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms

from detops.errors import DataError
from detops.inference import ModelMeta, Thresholds, load_predictor
from detops.inference.decode import batched_nms, decode
from detops.inference.tensorrt import EngineTarget, check_compatible, write_sidecar
from detops.model.postprocess import decode as torch_decode
from detops.model.preprocess import fit_longest_side, letterbox, pad_transform

META = ModelMeta(class_ids=[3, 7], class_names=["box", "disc"], image_size=64, pad_value=114,
                 evaluation=Thresholds(0.001, 0.6, 100, 1000), deploy_score_threshold=0.3)


def random_boxes(rng: np.random.Generator, n: int, quantize: bool = False) -> np.ndarray:
    xy = rng.uniform(0, 200, size=(n, 2))
    wh = rng.uniform(2, 60, size=(n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return np.round(boxes / 8) * 8 + np.array([0, 0, 8, 8], np.float32) if quantize else boxes


@pytest.mark.parametrize("seed", range(6))
def test_numpy_batched_nms_equals_torchvision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    boxes = random_boxes(rng, n, quantize=seed % 2 == 1)  # odd seeds: many identical boxes
    scores = rng.random(n).astype(np.float32)
    labels = rng.integers(0, 4, n)
    for iou in (0.3, 0.5, 0.7):
        expected = tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou)
        np.testing.assert_array_equal(batched_nms(boxes, scores, labels, iou), expected.numpy())


def test_ties_keep_the_lower_index_first_like_torchvision() -> None:
    rng = np.random.default_rng(1)
    boxes = random_boxes(rng, 60, quantize=True)
    scores = np.round(rng.random(60) * 4).astype(np.float32) / 4  # five distinct scores: many ties
    labels = rng.integers(0, 2, 60)
    expected = tv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), expected.numpy())
    kept = batched_nms(boxes, scores, labels, 0.5)
    for a, b in itertools.pairwise(kept):  # by score, then index
        assert scores[a] > scores[b] or (scores[a] == scores[b] and a < b)


def test_empty_inputs_give_empty_outputs() -> None:
    empty = batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == np.int64
    raw = np.full((2, 30, 5 + 3), -20.0, np.float32)  # every score far below any threshold
    for det in decode(raw, Thresholds(0.05, 0.5, 10, 1000)):
        assert det.boxes.shape == (0, 4) and len(det.scores) == 0 and len(det.labels) == 0


@pytest.mark.parametrize("seed", range(4))
def test_numpy_decode_equals_the_torch_decode_of_training(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = 300
    boxes = random_boxes(rng, 2 * points).reshape(2, points, 4)
    logits = rng.normal(-1, 2, size=(2, points, 1 + 3)).astype(np.float32)
    raw = np.concatenate([boxes, logits], axis=-1)
    th = Thresholds(0.05, 0.5, 50, 200)
    for ours, theirs in zip(decode(raw, th), torch_decode(torch.from_numpy(raw), 0.05, 0.5, 50, 200), strict=True):
        np.testing.assert_allclose(ours.scores, theirs["scores"].numpy(), rtol=1e-6)
        np.testing.assert_array_equal(ours.labels, theirs["labels"].numpy())
        np.testing.assert_array_equal(ours.boxes, theirs["boxes"].numpy())


@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (50, 300), (64, 64), (33, 17), (300, 50)])
def test_cv2_letterbox_equals_the_albumentations_pipeline(h: int, w: int) -> None:
    import albumentations as A
    import cv2

    image = np.random.default_rng(h * w).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    size = 64
    interpolation = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    resized_a = A.LongestMaxSize(max_size=size, interpolation=interpolation, p=1.0)(image=image)["image"]
    expected = pad_transform(size)(image=resized_a)["image"]  # type: ignore[operator]
    resized, _, _ = fit_longest_side(image, size)
    np.testing.assert_array_equal(resized, resized_a)
    padded, lb = letterbox(image, size)
    np.testing.assert_array_equal(padded, expected)
    assert (lb.width, lb.height) == (w, h)


def test_metadata_round_trips_and_deployment_thresholds() -> None:
    again = ModelMeta.from_json(META.to_json(), "test")
    assert again == META
    assert again.deployment().score_threshold == 0.3 and again.deployment().nms_iou == 0.6
    assert META.with_(deploy_score_threshold=None).deployment() == META.evaluation
    with pytest.raises(DataError, match="incomplete"):
        ModelMeta.from_dict({"class_ids": [1]}, "x.onnx")


def test_bad_model_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_predictor(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 not a protobuf at all" * 10)
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_predictor(junk)
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(DataError, match="unknown model file type"):
        load_predictor(other)


def test_engine_built_elsewhere_is_refused_before_loading(tmp_path: Path) -> None:
    h100 = EngineTarget(gpu="NVIDIA H100 80GB HBM3", tensorrt="11.0.0")
    with pytest.raises(DataError, match=r"built for GPU 'NVIDIA H100 80GB HBM3', this machine has NVIDIA L4"):
        check_compatible(Path("m.engine"), h100, EngineTarget(gpu="NVIDIA L4", tensorrt="11.0.0"))
    with pytest.raises(DataError, match=r"built with TensorRT 11.0.0, this machine has TensorRT 10.13.0"):
        check_compatible(Path("m.engine"), h100, EngineTarget(gpu="NVIDIA H100 80GB HBM3", tensorrt="10.13.0"))
    check_compatible(Path("m.engine"), h100, h100)  # same GPU, same version: fine
    # Through load_predictor: the sidecar is read and checked before TensorRT is even imported.
    engine = tmp_path / f"model.fp16.{h100.slug()}.engine"
    engine.write_bytes(b"not really an engine")
    write_sidecar(engine, META, h100, [1, 8])
    with pytest.raises(DataError, match=r"cannot run this engine.*NVIDIA H100"):
        load_predictor(engine)
    assert json.loads(engine.with_suffix(".engine.json").read_text())["tensorrt"]["gpu"] == h100.gpu
    engine.with_suffix(".engine.json").unlink()
    with pytest.raises(DataError, match=r"sidecar .* is missing"):
        load_predictor(engine)
    assert h100.slug() == "trt11.0.0-nvidia-h100-80gb-hbm3"
