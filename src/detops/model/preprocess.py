"""What the detector expects: an RGB image letterboxed to a square (resize the longest side, pad the rest).

Training, evaluation and the exported model all go through these functions, so a box predicted on the
letterboxed input maps back to the original pixels exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from detops.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

PAD_VALUE = 114  # grey padding, the usual letterbox fill: neither black nor white content


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image as HxWx3 uint8 RGB, honouring EXIF orientation (grayscale, RGBA, 16-bit all work)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return _to_rgb_uint8(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode the image ({exc}). Re-run `detops validate`.") from None


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


class Letterbox(NamedTuple):
    """How an original image of `width` x `height` became the square model input (a tuple, so batches
    carry it through Lightning's device transfer untouched)."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int


def fit_longest_side(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """Resize so the longest side is `size`; returns the per-axis scales.

    The arithmetic of albumentations' LongestMaxSize (rounded sides, INTER_AREA to shrink), in plain cv2:
    the torch-free inference path must not import albumentations (which imports torch). A test keeps the two
    identical.
    """
    import cv2

    h, w = image.shape[:2]
    if max(h, w) != size:
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interpolation = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interpolation)
    nh, nw = image.shape[:2]
    return image, nw / w, nh / h


def pad_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """Left/top padding of a centred PadIfNeeded to `size` (same integer split as albumentations)."""
    return (size - width) // 2, (size - height) // 2


def pad_transform(size: int) -> object:
    """Centred constant padding to a square as an albumentations transform (training moves boxes with it)."""
    import albumentations as A
    import cv2

    return A.PadIfNeeded(size, size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, p=1.0)


def pad_to_square(image: np.ndarray, size: int, pad_value: int = PAD_VALUE) -> np.ndarray:
    """The padding half of the letterbox, in cv2 (equal to `pad_transform`, tested)."""
    import cv2

    h, w = image.shape[:2]
    left, top = pad_offsets(h, w, size)
    return cv2.copyMakeBorder(image, top, size - h - top, left, size - w - left, cv2.BORDER_CONSTANT,
                              value=(pad_value,) * 3)


def letterbox(image: np.ndarray, size: int, pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """Square `size` x `size` model input from an RGB image, with the geometry to undo it. `pad_value`: the
    fill the model was trained with (a model file's `ModelMeta.pad_value`)."""
    h, w = image.shape[:2]
    resized, sx, sy = fit_longest_side(image, size)
    pad_x, pad_y = pad_offsets(resized.shape[0], resized.shape[1], size)
    return pad_to_square(resized, size, pad_value), Letterbox(w, h, sx, sy, pad_x, pad_y)


def boxes_to_original(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """xyxy boxes on the letterboxed input -> xyxy boxes in original pixels, clipped to the image."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - lb.pad_x) / lb.scale_x
    out[:, [1, 3]] = (out[:, [1, 3]] - lb.pad_y) / lb.scale_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, lb.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, lb.height)
    return out
