"""Render the synthetic detection dataset: PNG images and one COCO instances json.

Each image draws from its own generator, `np.random.default_rng([seed, index])`, so the output does not
depend on how images are spread over worker processes, and the same seed writes the same bytes. Objects
are placed one by one on top of each other; a placement that would leave this object or one below it less
than `min_visible` visible (cut by the border or covered by later objects) is redrawn, so every drawn
object is annotated and every annotated object can be seen.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from detops.atomic import write_json
from detops.config.sample import SampleParams
from detops.progress import track
from detops.sample.background import textured_background
from detops.sample.shapes import Raster, rasterize

ANNOTATIONS_FILE = "annotations.json"
IMAGES_DIR = "images"
SUPERSAMPLE = 4
PLACEMENT_TRIES = 12
# Objects per image: 1 + Binomial(max - 1, p); p = 3/7 gives about 4 with the default maximum of 8.
EXTRA_OBJECT_PROBABILITY = 3 / 7
# Sizes are log-normal around `typical_object_size` with this sigma, redrawn until within the bounds:
# with the defaults (8..128 px around 40) 93 % of objects are 16..96 px, a few are tiny or huge.
SIZE_LOG_SIGMA = 0.5
ASPECT_JITTER = 0.1  # objects are stretched by up to exp(+-0.1), about 10 %
BORDER_OVERHANG = 0.25  # centres may lie up to this share of the size outside the image
SHADING = 0.2  # most brightness change across one object, as if lit from one side
BLUR_RADIUS = (0.5, 1.5)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
PNG_COMPRESSION = 6
# Fewest images per worker process before a pool pays for its start-up.
IMAGES_PER_PROCESS = 32


@dataclass
class _Placed:
    """An object on the canvas and the part of it later objects have not covered."""

    category_id: int
    raster: Raster
    visible: np.ndarray


def render_image(index: int, params: SampleParams) -> tuple[np.ndarray, list[tuple[int, tuple[float, ...]]]]:
    """Image `index` as (uint8 HxWx3 array, [(category_id, [x, y, w, h]), ...])."""
    rng = np.random.default_rng([params.seed, index])
    size = params.image_size
    canvas = textured_background(rng, size, params.texture)
    weights = np.asarray(params.class_weights) / sum(params.class_weights)
    placed: list[_Placed] = []
    for _ in range(1 + int(rng.binomial(params.max_objects_per_image - 1, EXTRA_OBJECT_PROBABILITY))):
        for _ in range(PLACEMENT_TRIES):
            class_index = int(rng.choice(len(weights), p=weights))
            raster = _propose(rng, params, params.classes[class_index])
            if raster is not None and _fits(raster, placed, params.min_visible):
                _paint(rng, canvas, raster, params.min_contrast)
                for other in placed:
                    _cover(other, raster)
                placed.append(_Placed(class_index + 1, raster, raster.alpha.copy()))
                break
    canvas = _relight(rng, canvas, params)
    return canvas, [(p.category_id, p.raster.box) for p in placed]


def _object_size(rng: np.random.Generator, params: SampleParams) -> float:
    low = math.log(params.min_object_size)
    high = math.log(min(params.max_object_size, params.image_size))
    if high <= low:
        return math.exp(low)
    centre = min(max(math.log(params.typical_object_size), low), high)
    while True:
        value = rng.normal(centre, SIZE_LOG_SIGMA)
        if low <= value <= high:
            return math.exp(value)


def _propose(rng: np.random.Generator, params: SampleParams, shape: str) -> Raster | None:
    size = _object_size(rng, params)
    angle = math.radians(rng.uniform(-params.max_rotation, params.max_rotation))
    aspect = math.exp(rng.uniform(-ASPECT_JITTER, ASPECT_JITTER))
    x, y = rng.uniform(-BORDER_OVERHANG * size, params.image_size + BORDER_OVERHANG * size, size=2)
    raster = rasterize(shape, size, angle, aspect, (float(x), float(y)), params.image_size, SUPERSAMPLE)
    if raster is None or raster.area < params.min_visible * raster.full_area:
        return None
    return raster


def _overlap(a: Raster, b: Raster) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Index windows into a's and b's alpha for the pixels they share, or None."""
    top, left = max(a.top, b.top), max(a.left, b.left)
    bottom = min(a.top + a.alpha.shape[0], b.top + b.alpha.shape[0])
    right = min(a.left + a.alpha.shape[1], b.left + b.alpha.shape[1])
    if top >= bottom or left >= right:
        return None
    return (
        (slice(top - a.top, bottom - a.top), slice(left - a.left, right - a.left)),
        (slice(top - b.top, bottom - b.top), slice(left - b.left, right - b.left)),
    )


def _fits(new: Raster, placed: list[_Placed], min_visible: float) -> bool:
    """True when drawing `new` on top leaves every object below at least `min_visible` visible."""
    for other in placed:
        windows = _overlap(other.raster, new)
        if windows is None:
            continue
        (mine, theirs) = windows
        hidden = float((other.visible[mine] * new.alpha[theirs]).sum())
        if other.visible.sum() - hidden < min_visible * other.raster.full_area:
            return False
    return True


def _cover(other: _Placed, new: Raster) -> None:
    windows = _overlap(other.raster, new)
    if windows is not None:
        mine, theirs = windows
        other.visible[mine] *= 1 - new.alpha[theirs]


def _paint(rng: np.random.Generator, canvas: np.ndarray, raster: Raster, min_contrast: float) -> None:
    """Alpha-blend a random colour, far enough in luminance from what lies beneath, with a soft shading."""
    region = canvas[raster.rows, raster.cols]
    alpha = raster.alpha[:, :, None]
    beneath = float((region @ LUMA * raster.alpha).sum() / raster.alpha.sum())
    colour = _contrasting_colour(rng, beneath, min_contrast)
    h, w = raster.alpha.shape
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w)[None, :] - w / 2) * math.cos(direction) + (np.arange(h)[:, None] - h / 2) * math.sin(direction)
    shade = 1 + rng.uniform(0, SHADING) * ramp / max(h, w)
    fill = np.clip(colour[None, None, :] * shade[:, :, None], 0, 1)
    canvas[raster.rows, raster.cols] = region * (1 - alpha) + fill * alpha


def _contrasting_colour(rng: np.random.Generator, beneath: float, min_contrast: float) -> np.ndarray:
    colour = rng.uniform(0, 1, size=3).astype(np.float32)
    luma = float(colour @ LUMA)
    gap = rng.uniform(min_contrast, min(min_contrast + 0.3, 0.47))
    targets = [t for t in (beneath + gap, beneath - gap) if 0.03 <= t <= 0.97]
    target = targets[int(rng.integers(len(targets)))] if targets else (0.97 if beneath < 0.5 else 0.03)
    if target > luma:
        return colour + (1 - colour) * ((target - luma) / max(1 - luma, 1e-6))
    return colour * (target / max(luma, 1e-6))


def _relight(rng: np.random.Generator, canvas: np.ndarray, params: SampleParams) -> np.ndarray:
    """Global brightness/contrast, an occasional blur, then sensor noise; returns uint8."""
    contrast = rng.uniform(1 - params.lighting, 1 + params.lighting)
    brightness = rng.uniform(-params.lighting / 2, params.lighting / 2)
    mean = float(canvas.mean())
    canvas = (canvas - mean) * contrast + mean + brightness
    if rng.random() < params.blur_probability:
        radius = rng.uniform(*BLUR_RADIUS)
        blurred = Image.fromarray(_to_uint8(canvas)).filter(ImageFilter.GaussianBlur(radius))
        canvas = np.asarray(blurred, dtype=np.float32) / 255
    noise = rng.standard_normal(size=canvas.shape, dtype=np.float32) * np.float32(params.noise_std / 255)
    return _to_uint8(canvas + noise)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _write_image(index: int, out_dir: Path, params: SampleParams) -> tuple[str, list[tuple[int, tuple[float, ...]]]]:
    """Render image `index`, save it as PNG (no metadata, fixed compression); return its file name and boxes."""
    pixels, objects = render_image(index, params)
    file_name = f"{IMAGES_DIR}/{index + 1:06d}.png"
    Image.fromarray(pixels).save(out_dir / file_name, format="PNG", compress_level=PNG_COMPRESSION)
    return file_name, objects


def _process_count(params: SampleParams) -> int:
    cores = params.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return max(1, min(cores or 1, math.ceil(params.num_images / IMAGES_PER_PROCESS)))


def generate_sample(out_dir: Path, params: SampleParams) -> Path:
    """Write `images/*.png` and `annotations.json` (COCO instances) into `out_dir`; return the json's path.

    Several workers use spawned processes, so a calling script needs the usual `if __name__ == "__main__":`
    guard; where workers cannot start, it renders in this process instead (same bytes, slower).
    """
    out_dir = Path(out_dir)
    (out_dir / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    work = partial(_write_image, out_dir=out_dir, params=params)
    indices = range(params.num_images)
    processes = _process_count(params)
    rendered = None
    if processes > 1:
        try:
            # spawn, not fork: the caller (a Prefect flow, a test runner) may hold threads a fork copies mid-lock.
            with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
                done = pool.map(work, indices, chunksize=8)
                rendered = list(track(done, "sample: rendering images", total=params.num_images))
        except BrokenProcessPool:
            # Workers could not start (e.g. a script read from stdin cannot be re-imported): same output, one process.
            warnings.warn("sample: worker processes failed to start; rendering in this process", stacklevel=2)
    if rendered is None:
        rendered = list(track(map(work, indices), "sample: rendering images", total=params.num_images))
    return write_json(out_dir / ANNOTATIONS_FILE, _coco(rendered, params), indent=None)


def _coco(rendered: list[tuple[str, list[tuple[int, tuple[float, ...]]]]], params: SampleParams) -> dict[str, Any]:
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, (file_name, objects) in enumerate(rendered, start=1):
        images.append({"id": image_id, "file_name": file_name, "width": params.image_size, "height": params.image_size})
        for category_id, box in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": [round(v, 4) for v in box],
                    "area": round(box[2] * box[3], 4),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {
            "description": "detops synthetic sample",
            "version": "1",
            "params": params.model_dump(mode="json", exclude={"workers"}),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": name, "supercategory": "shape"} for i, name in enumerate(params.classes, start=1)
        ],
        "licenses": [],
    }
