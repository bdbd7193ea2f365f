"""Request images: the header check that refuses a decompression bomb before a pixel is decoded (the gate runs it
on every body), and decoding with errors a client can read. Both raise `Rejected`, which carries the HTTP status
the client gets."""

from __future__ import annotations

import io
import warnings

import numpy as np


class Rejected(Exception):
    """A request the server refuses: the status and the message of the JSON error it answers."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def read_header(data: bytes, max_pixels: int) -> None:
    """Width and height from the header alone (PIL opens lazily); 400 when it is no image PIL reads, 413 when it
    has more than `max_pixels` pixels."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise Rejected(400, "the image is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(io.BytesIO(data)) as img:
                width, height = int(img.width), int(img.height)
    except Image.DecompressionBombError as exc:
        raise Rejected(413, f"the image is too large: {exc} At most {max_pixels:,} pixels are decoded "
                            "(serve.max_pixels).") from None
    except UnidentifiedImageError:
        raise Rejected(400, "not an image: no image format recognises these bytes; send a PNG, JPEG, BMP, WebP or "
                            "TIFF file.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected(400, f"not an image this server can read ({first_line(exc)}).") from None
    if width * height > max_pixels:
        raise Rejected(413, f"the image is {width} x {height} = {width * height:,} pixels, more than the "
                            f"{max_pixels:,} allowed (serve.max_pixels); resize it before sending.")


def decode(data: bytes) -> np.ndarray:
    """The image (its header checked by the gate) as HxWx3 uint8 RGB, EXIF orientation applied as `detops predict`
    reads files; a truncated or corrupt file is a 400."""
    from detops.errors import DataError
    from detops.inference.predictor import load_image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_image(data)
    except DataError as exc:
        why = str(exc).removeprefix("cannot decode image bytes (").removesuffix(").")
        raise Rejected(400, f"the image cannot be decoded, the file is truncated or corrupt: {why}.") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
