"""albumentations pipelines built from `train.augment`; every geometric transform moves the boxes too."""

from __future__ import annotations

import albumentations as A
import cv2

from detops.config.train import AugmentParams
from detops.model.preprocess import PAD_VALUE, pad_transform

BOX_FORMAT = "pascal_voc"  # xyxy pixels, what the loss and the metric use


def _bbox_params(min_visibility: float) -> A.BboxParams:
    # clip + filter: boxes poking outside the image or collapsed by a transform are cut or dropped, not errors.
    return A.BboxParams(format=BOX_FORMAT, label_fields=["labels"], min_visibility=min_visibility,
                        min_width=1.0, min_height=1.0, clip=True, filter_invalid_bboxes=True)


def train_pipeline(image_size: int, params: AugmentParams) -> A.Compose:
    """Letterbox padding (the image is already resized to its longest side), then random transforms.

    Randomness comes only from the Compose's own generator, which the dataset reseeds per sample, so an
    epoch's augmentations are reproducible (needed for an exact `--resume`).
    """
    transforms: list[A.BasicTransform] = [pad_transform(image_size)]
    if params.scale_min != 1 or params.scale_max != 1 or params.translate > 0:
        transforms.append(A.Affine(scale=(params.scale_min, params.scale_max), keep_ratio=True,
                                   translate_percent=(-params.translate, params.translate),
                                   border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, p=params.affine))
    if params.hflip:
        transforms.append(A.HorizontalFlip(p=params.hflip))
    if params.vflip:
        transforms.append(A.VerticalFlip(p=params.vflip))
    if params.brightness_contrast:
        transforms.append(A.RandomBrightnessContrast(p=params.brightness_contrast))
    if params.hue_saturation:
        transforms.append(A.HueSaturationValue(p=params.hue_saturation))
    if params.blur:
        transforms.append(A.GaussianBlur(blur_limit=(3, 5), p=params.blur))
    return A.Compose(transforms, bbox_params=_bbox_params(params.min_visibility), seed=0)


def eval_pipeline(image_size: int) -> A.Compose:
    """Letterbox padding only: validation and inference see what training saw, minus the randomness."""
    return A.Compose([pad_transform(image_size)], bbox_params=_bbox_params(0.0), seed=0)
