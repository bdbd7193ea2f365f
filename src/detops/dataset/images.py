"""Probe image files: the size a viewer shows (EXIF orientation applied), mode, and content sha1.

Import reads every image once, so the probe is cheap but still catches broken files: a JPEG is
decoded at 1/8 scale (`Image.draft`), which walks the whole compressed stream and so finds
truncation at a fraction of a full decode; other formats are decoded fully (PNG decoding is
mostly zlib, already cheap). `Image.verify` is not enough: it does not notice a truncated JPEG.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from detops.errors import DataError
from detops.progress import track

# EXIF orientations 5-8 rotate by 90 degrees: the displayed image has width and height swapped.
_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_PNG_END = b"IEND\xaeB`\x82"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageInfo:
    """What import needs from an image file; `width`/`height` are of the oriented (displayed) image."""

    width: int
    height: int
    mode: str
    format: str
    orientation: int
    sha1: str

    @property
    def rotated(self) -> bool:
        return self.orientation in _SWAPPING_ORIENTATIONS


def probe_image(path: Path) -> ImageInfo:
    """Read `path` once: hash its bytes, read the header, check the data; DataError when broken."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found.") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image file.") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image file ({exc.strerror or exc}).") from exc
    if not data:
        raise DataError(f"{path}: image file is empty (0 bytes).")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            mode, fmt = img.mode, img.format or "unknown"
            orientation = _orientation(img)
            _check_data(img, data)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image, or a format Pillow cannot read.") from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: unreadable or truncated image ({type(exc).__name__}: {exc}).") from exc
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(width, height, mode, fmt, orientation, hashlib.sha1(data).hexdigest())


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:  # a broken EXIF block does not make the pixels unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_data(img: Image.Image, data: bytes) -> None:
    if img.format == "JPEG":
        img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
    img.load()
    # Pillow stops reading a PNG once the pixels are decoded; a file cut after that point still
    # lacks its closing chunk, which other readers (and the CRC checks) reject.
    if img.format == "PNG" and _PNG_END not in data[-64:]:
        raise OSError("PNG file is truncated (no IEND chunk)")


def probe_images(
    paths: Sequence[Path],
    workers: int = 0,
    description: str = "Reading images",
    where: Callable[[int], str] | None = None,
) -> list[ImageInfo]:
    """Probe every path in a thread pool (PIL releases the GIL while decoding).

    Every broken file is collected before failing, so one run lists them all; `where(i)` says
    where path `i` was declared (annotation file, object) for the error message.
    """
    results: list[ImageInfo | DataError] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results.extend(track(pool.map(_probe_or_error, paths), description, total=len(paths)))
    failures = [(i, r) for i, r in enumerate(results) if isinstance(r, DataError)]
    if failures:
        lines = [f"{err}" + (f" (declared in {where(i)})" if where else "") for i, err in failures[:10]]
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise DataError(
            f"{len(failures)} image file(s) missing or unreadable; fix or remove them from the annotations:\n  "
            + "\n  ".join(lines)
            + more
        )
    return [r for r in results if isinstance(r, ImageInfo)]


def _probe_or_error(path: Path) -> ImageInfo | DataError:
    try:
        return probe_image(path)
    except DataError as exc:
        return exc
