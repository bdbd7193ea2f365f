"""What an image looks like, in a few numbers a drift test can compare: light, colour, focus, size.

Decoded with OpenCV (EXIF orientation applied, any depth to 8-bit), so the size is the displayed one, as import
records it. Sharpness is the variance of the Laplacian: high for crisp edges, near zero for a blurred image.
"""

from __future__ import annotations

import numpy as np

from detops.errors import DataError

PIXEL_COLUMNS = ("brightness", "contrast", "saturation", "sharpness", "width", "height", "aspect_ratio", "file_size")


def decode_bgr(data: bytes, where: str) -> np.ndarray:
    """HxWx3 uint8 BGR; DataError naming `where` when the bytes are not an image OpenCV can read."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise DataError(f"{where}: not an image, or unreadable.")
    return image


def pixel_features(image: np.ndarray, file_size: int) -> dict[str, float]:
    """Brightness and contrast (mean and std of the grey levels, 0-255), saturation (mean HSV S, 0-255),
    sharpness (Laplacian variance), width, height, aspect ratio (width / height), file size in bytes."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    saturation = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)[:, :, 1]
    mean, std = cv2.meanStdDev(grey)
    height, width = grey.shape
    return {
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
        "saturation": float(saturation.mean()),
        "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        "width": float(width),
        "height": float(height),
        "aspect_ratio": width / height,
        "file_size": float(file_size),
    }
