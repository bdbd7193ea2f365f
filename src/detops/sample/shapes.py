"""Object silhouettes, rasterised with anti-aliasing; the box is measured from the drawn mask itself.

Every shape is a polygon at unit scale. It is stretched, rotated, then scaled so that its bounding box's
longer side is exactly the requested size, and drawn on a supersampled canvas: the coverage of each output
pixel becomes its alpha (so a 10 px star still reads as a star) and the box is the extent of the ink,
precise to 1/supersample px, clipped to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw


def _regular(corners: int, phase: float) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(corners) / corners
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    outer = _regular(2 * points, -math.pi / 2)
    outer[1::2] *= inner
    return outer


def _cross(arm: float) -> np.ndarray:
    a = arm / 2
    return np.array(
        [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)],
        dtype=float,
    )


OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular(96, 0.0),
    "square": _regular(4, math.pi / 4),
    "triangle": _regular(3, -math.pi / 2),
    "star": _star(5, inner=0.42),
    "cross": _cross(arm=0.38),
}


@dataclass(frozen=True)
class Raster:
    """The part of one object that falls inside the image."""

    top: int
    left: int
    alpha: np.ndarray  # float32 (h, w): share of each pixel the shape covers, for the region at (top, left)
    box: tuple[float, float, float, float]  # tight [x, y, w, h] in pixels, clipped to the image
    area: float  # covered pixels inside the image
    full_area: float  # covered pixels before clipping to the image

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.alpha.shape[0])

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.alpha.shape[1])


def rasterize(
    shape: str,
    size: float,
    angle: float,
    aspect: float,
    centre: tuple[float, float],
    image_size: int,
    supersample: int,
) -> Raster | None:
    """Draw `shape` (box side `size`, box centred on `centre` = (x, y)); None when nothing lands in the image."""
    points = OUTLINES[shape] * np.array([aspect, 1 / aspect])
    cos, sin = math.cos(angle), math.sin(angle)
    points = points @ np.array([[cos, sin], [-sin, cos]])
    low, high = points.min(axis=0), points.max(axis=0)
    points = (points - (low + high) / 2) * (size / float((high - low).max())) + np.asarray(centre)

    left, top = (math.floor(v) - 1 for v in points.min(axis=0))
    right, bottom = (math.ceil(v) + 1 for v in points.max(axis=0))
    s = supersample
    canvas = Image.new("L", ((right - left) * s, (bottom - top) * s), 0)
    scaled = (points - np.array([left, top])) * s
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in scaled], fill=255)
    ink = np.asarray(canvas) > 0
    full_area = float(ink.sum()) / s**2

    # The region of the canvas inside the image, in whole output pixels.
    y0, y1 = max(top, 0), min(bottom, image_size)
    x0, x1 = max(left, 0), min(right, image_size)
    if y0 >= y1 or x0 >= x1:
        return None
    inside = ink[(y0 - top) * s : (y1 - top) * s, (x0 - left) * s : (x1 - left) * s]
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None
    box = (
        float(x0 + cols[0] / s),
        float(y0 + rows[0] / s),
        float((cols[-1] + 1 - cols[0]) / s),
        float((rows[-1] + 1 - rows[0]) / s),
    )
    alpha = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3), dtype=np.float32)
    return Raster(y0, x0, alpha, box, float(inside.sum()) / s**2, full_area)
