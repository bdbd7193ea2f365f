"""Image integrity check: every file decodes completely, in parallel processes because decoding is CPU-bound.

The result is a table (one row per image, in dataset order) that the image suite checks with Great
Expectations, so the decision about a bad file is made by the same gate as every other rule.
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from detops.dataset.canonical import Dataset
from detops.dataset.paths import resolve_inside
from detops.errors import DataError
from detops.progress import track
from detops.validation.table import INTEGRITY_COLUMNS

# (readable, problem, PIL format, width, height) of one file.
FileCheck = tuple[bool, str, str | None, float, float]

_NAN = float("nan")
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 degrees: width and height swap
_PNG_END = b"IEND\xaeB`\x82"


def inspect_image(path: str) -> FileCheck:
    """Read and fully decode one file (`load()` walks every byte, so truncation cannot hide).

    The size is the displayed one (EXIF orientations 5-8 swap width and height), as `import` records it.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return False, "file not found", None, _NAN, _NAN
    except IsADirectoryError:
        return False, "is a folder, not an image file", None, _NAN, _NAN
    except OSError as exc:
        return False, f"cannot read the file: {exc.strerror or exc}", None, _NAN, _NAN
    if not data:
        return False, "empty file (0 bytes)", None, _NAN, _NAN
    fmt: str | None = None
    width = height = _NAN
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, (float(img.size[0]), float(img.size[1]))
            if _orientation(img) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
            img.load()
        # Pillow stops reading a PNG once its pixels are decoded; a file cut after them lacks its end chunk.
        if fmt == "PNG" and _PNG_END not in data[-64:]:
            raise OSError("PNG file is truncated (no IEND chunk)")
    except UnidentifiedImageError:
        return False, "not an image PIL can read", None, _NAN, _NAN
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        what = "truncated file" if "truncat" in str(exc).lower() else "cannot decode"
        return False, f"{what} ({fmt or 'unknown format'}): {exc}", fmt, width, height
    return True, "", fmt, width, height


def _orientation(img: Any) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block does not make the pixels unreadable
        return 1
    return value if isinstance(value, int) else 1


def check_images(dataset: Dataset, root: Path, workers: int = 0) -> pd.DataFrame:
    """Integrity table of every image under `root`; `workers` processes (0 = one per core, 1 = in-process)."""
    images = dataset["images"]
    checks: list[FileCheck | None] = [None] * len(images)
    paths: list[tuple[int, str]] = []
    for pos, image in enumerate(images):
        try:
            where = f"image {image.get('id')}"
            paths.append((pos, str(resolve_inside(root, str(image.get("file_name") or ""), where))))
        except DataError as exc:
            checks[pos] = (False, str(exc).removeprefix(f"{where}: "), None, _NAN, _NAN)
    n_workers = min(workers or os.cpu_count() or 1, max(len(paths), 1))
    files = [path for _, path in paths]
    if n_workers == 1:
        results = list(track(map(inspect_image, files), "Checking images", total=len(files)))
    else:
        chunk = max(1, min(64, len(files) // (n_workers * 8)))
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            mapped = pool.map(inspect_image, files, chunksize=chunk)
            results = list(track(mapped, f"Checking images ({n_workers} processes)", total=len(files)))
    for (pos, _), result in zip(paths, results, strict=True):
        checks[pos] = result
    return pd.DataFrame(checks, columns=list(INTEGRITY_COLUMNS))


def trusted_integrity(dataset: Dataset) -> pd.DataFrame:
    """An integrity table that takes the json at its word: for validating boxes without the image files."""
    rows = [
        (True, "", None, float(im.get("width") or _NAN), float(im.get("height") or _NAN)) for im in dataset["images"]
    ]
    return pd.DataFrame(rows, columns=list(INTEGRITY_COLUMNS))
