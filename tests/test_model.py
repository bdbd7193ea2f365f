"""Detector network, targets, postprocess and letterbox: shapes, exportability, box geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detops.config.train import TrainParams
from detops.errors import DataError, ParamsError, TrainingError
from detops.model.detector import Detector, DetectorConfig, anchor_points
from detops.model.loss import DetectionLoss
from detops.model.postprocess import decode
from detops.model.preprocess import PAD_VALUE, boxes_to_original, letterbox, read_rgb
from detops.model.targets import assign, centerness_target, regression_ranges

TINY = DetectorConfig(backbone="test_resnet", num_classes=3, image_size=64, strides=(8, 16, 32), fpn_channels=16,
                      head_convs=1)


@pytest.fixture(scope="module")
def tiny() -> Detector:
    torch.manual_seed(0)
    return Detector(TINY).eval()


def test_forward_has_one_static_output_per_anchor_point(tiny: Detector) -> None:
    raw = tiny(torch.rand(2, 3, 64, 64))
    assert raw.shape == (2, 8 * 8 + 4 * 4 + 2 * 2, 5 + 3)
    assert tiny.num_points == raw.shape[1]
    boxes = raw[..., :4]
    assert torch.all(boxes[..., 2] > boxes[..., 0]) and torch.all(boxes[..., 3] > boxes[..., 1])
    # Each box surrounds its anchor point (distances are positive by construction).
    points = tiny.points[None]
    assert torch.all(boxes[..., :2] <= points) and torch.all(boxes[..., 2:] >= points)


def test_anchor_points_are_cell_centres_level_by_level() -> None:
    points, strides = anchor_points(64, (8, 16))
    assert points.shape == (64 + 16, 2)
    assert points[0].tolist() == [4.0, 4.0] and points[1].tolist() == [12.0, 4.0]  # row-major: x first
    assert points[64].tolist() == [8.0, 8.0] and strides[64] == 16


def test_image_size_must_tile_the_largest_stride() -> None:
    with pytest.raises(TrainingError, match=r"250 is not divisible by 32.*Use 224 or 256"):
        Detector(DetectorConfig.from_params(TrainParams(), 2, backbone="resnet18", image_size=250))


def test_unknown_backbone_and_missing_stride_are_params_errors() -> None:
    with pytest.raises(ParamsError, match="not a timm model"):
        Detector(DetectorConfig.from_params(TrainParams(), 2, backbone="no_such_net_xyz", image_size=64))
    with pytest.raises(ParamsError, match="strides"):
        Detector(DetectorConfig.from_params(TrainParams(), 2, backbone="resnet18", image_size=128, strides=(8, 64)))


def test_onnx_export_matches_torch_and_postprocess_runs_on_numpy(tiny: Detector, tmp_path: Path) -> None:
    import onnxruntime as ort

    x = torch.rand(1, 3, 64, 64)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(tiny, (x,), str(path), input_names=["images"], output_names=["raw"], opset_version=17,
                      dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_raw,) = session.run(None, {"images": x.numpy()})
    with torch.inference_mode():
        torch_raw = tiny(x)
    assert onnx_raw.shape == tuple(torch_raw.shape)
    np.testing.assert_allclose(onnx_raw, torch_raw.numpy(), rtol=1e-3, atol=1e-3)
    from_numpy, from_torch = decode(onnx_raw, 0.0, 0.5, 10)[0], decode(torch_raw, 0.0, 0.5, 10)[0]
    assert len(from_numpy["scores"]) == len(from_torch["scores"]) == 10
    torch.testing.assert_close(from_numpy["boxes"], from_torch["boxes"], rtol=1e-3, atol=1e-2)


def _raw_with(boxes: list[list[float]], class_logits: list[list[float]]) -> torch.Tensor:
    """A fake raw output: given boxes, centerness logit 0, given class logits."""
    b = torch.tensor(boxes)
    return torch.cat([b, torch.zeros(len(boxes), 1), torch.tensor(class_logits)], dim=1)[None]


def test_postprocess_thresholds_suppresses_duplicates_and_keeps_other_classes() -> None:
    raw = _raw_with(
        [[10, 10, 50, 50], [11, 11, 51, 51], [12, 12, 50, 50], [100, 100, 120, 130], [0, 0, 5, 5]],
        [[4, -9], [3, -9], [-9, 3], [2, -9], [-9, -9]],
    )
    det = decode(raw, score_threshold=0.1, nms_iou=0.5, max_detections=10)[0]
    # duplicate of box 0 (same class) suppressed; box 2 overlaps but is another class; box 4 below threshold
    assert det["labels"].tolist() == [0, 1, 0]
    assert det["boxes"][:, 0].tolist() == [10, 12, 100]
    assert torch.all(det["scores"][:-1] >= det["scores"][1:])
    assert torch.all(det["boxes"][:, 2:] > det["boxes"][:, :2])
    assert len(decode(raw, 0.1, 0.5, max_detections=1)[0]["scores"]) == 1


def test_regression_ranges_cover_every_size_once() -> None:
    _, strides = anchor_points(256, (8, 16, 32))
    ranges = regression_ranges(strides)
    assert ranges[strides == 8][0].tolist() == [0, 32]
    assert ranges[strides == 16][0].tolist() == [32, 64]
    assert ranges[strides == 32][0].tolist() == [64, float("inf")]
    _, skipping = anchor_points(256, (8, 32))  # a skipped level leaves no gap
    assert regression_ranges(skipping)[skipping == 32][0].tolist() == [32, float("inf")]


def test_assignment_picks_points_inside_near_centre_at_the_right_level() -> None:
    points, strides = anchor_points(128, (8, 16, 32))
    ranges = regression_ranges(strides)
    small = [40.0, 40.0, 60.0, 60.0]  # 20 px: stride 8 level
    large = [0.0, 0.0, 128.0, 100.0]  # longest distance > 64: coarser levels
    labels, matched = assign(points, strides, ranges, torch.tensor([small, large]), torch.tensor([1, 0]), 1.5)
    pos_small = labels == 1
    assert pos_small.any() and torch.all(strides[pos_small] == 8)
    p = points[pos_small]
    assert torch.all((p > 40) & (p < 60))
    assert torch.all(matched[pos_small] == torch.tensor(small))
    assert torch.all(strides[labels == 0] >= 16)
    empty_labels, _ = assign(points, strides, ranges, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 1.5)
    assert torch.all(empty_labels == -1)


def test_centerness_is_one_at_centre_and_falls_off() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 2)
    c = centerness_target(torch.tensor([[5.0, 5.0], [1.0, 5.0]]), boxes)
    assert c[0] == pytest.approx(1.0) and 0 < c[1] < 0.5


def test_a_few_steps_fit_one_image(tiny: Detector) -> None:
    """The loss is learnable end to end: a handful of Adam steps on one image lower it."""
    torch.manual_seed(0)
    model = Detector(TINY).train()
    criterion = DetectionLoss(model.points, model.point_strides)
    images = torch.rand(2, 3, 64, 64)
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0]]), torch.tensor([[20.0, 30.0, 60.0, 60.0]])]
    labels = [torch.tensor([2]), torch.tensor([0])]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = criterion(model(images), boxes, labels)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_loss_on_images_without_boxes_is_finite_and_differentiable(tiny: Detector) -> None:
    model = Detector(TINY).train()
    criterion = DetectionLoss(model.points, model.point_strides)
    out = criterion(model(torch.rand(1, 3, 64, 64)), [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["box"] == 0


@pytest.mark.parametrize(("width", "height"), [(100, 50), (40, 80), (64, 64)])
def test_letterbox_round_trip_maps_boxes_back_to_original_pixels(width: int, height: int) -> None:
    image = np.zeros((height, width, 3), np.uint8)
    image[10:20, 5:25] = 255  # a white block
    padded, lb = letterbox(image, 64)
    assert padded.shape == (64, 64, 3)
    block = np.argwhere(padded[..., 0] > 200)
    y0, x0 = block.min(0)
    y1, x1 = block.max(0) + 1
    back = boxes_to_original(np.array([[x0, y0, x1, y1]]), lb)[0]
    np.testing.assert_allclose(back, [5, 10, 25, 20], atol=2.0)
    if width != height:  # padding is grey and centred
        corner = padded[0, 0] if width < height else padded[-1, -1]
        assert tuple(corner) == (PAD_VALUE,) * 3
        assert (lb.pad_x > 0) == (width < height) and (lb.pad_y > 0) == (width > height)


def test_read_rgb_handles_modes_and_exif_orientation(tmp_path: Path) -> None:
    gray16 = Image.fromarray(np.full((6, 4), 65535, np.uint16))
    gray16.save(tmp_path / "g16.png")
    Image.new("RGBA", (4, 6), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    Image.new("L", (4, 6), 77).save(tmp_path / "gray.png")
    rotated = Image.new("RGB", (4, 6), (1, 2, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    rotated.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_rgb(tmp_path / "g16.png").shape == (6, 4, 3) and read_rgb(tmp_path / "g16.png").max() == 255
    assert read_rgb(tmp_path / "rgba.png")[0, 0].tolist() == [10, 20, 30]
    assert read_rgb(tmp_path / "gray.png")[0, 0].tolist() == [77, 77, 77]
    assert read_rgb(tmp_path / "rot.jpg").shape == (4, 6, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken\.png"):
        read_rgb(tmp_path / "broken.png")


@pytest.mark.shared
def test_pretrained_weights_load_from_a_local_timm_state_dict(shared: Path) -> None:
    from safetensors.torch import load_file

    path = shared / "weights" / "mobilenetv2_100.imagenet.safetensors"
    config = DetectorConfig.from_params(TrainParams(), 3, backbone="mobilenetv2_100", image_size=64)
    model = Detector(config, pretrained=str(path))
    expected = load_file(str(path))["conv_stem.weight"]
    torch.testing.assert_close(model.backbone.body.conv_stem.weight.detach(), expected)
    with pytest.raises(ParamsError, match="not found"):
        Detector(DetectorConfig.from_params(TrainParams(), 3, backbone="mobilenetv2_100", image_size=64),
                 pretrained=str(path.with_name("missing.safetensors")))
