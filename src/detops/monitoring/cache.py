"""Per-image feature cache keyed by the image's sha1 (and the model version for embeddings).

An image's features depend only on its bytes, so a dataset that grows by a batch, or a reference checked against
each new batch, decodes each image once. One small file per image, written atomically: concurrent runs can share
the cache, and a corrupt entry is a miss that is written again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detops.atomic import atomic_path

# Bump when a pixel feature's definition changes: old entries are then never read.
PIXEL_VERSION = "pixels-v1"


class FeatureCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _pixel_file(self, sha1: str) -> Path:
        return self.root / PIXEL_VERSION / sha1[:2] / f"{sha1}.json"

    def _embedding_file(self, sha1: str, model: str) -> Path:
        return self.root / "embeddings" / model / sha1[:2] / f"{sha1}.npy"

    def pixels(self, sha1: str) -> dict[str, float] | None:
        try:
            value = json.loads(self._pixel_file(sha1).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def put_pixels(self, sha1: str, features: dict[str, float]) -> None:
        with atomic_path(self._pixel_file(sha1)) as tmp:
            tmp.write_text(json.dumps(features), encoding="utf-8")

    def embedding(self, sha1: str, model: str) -> np.ndarray | None:
        try:
            value = np.load(self._embedding_file(sha1, model), allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        return value if value.ndim == 1 else None

    def put_embedding(self, sha1: str, model: str, vector: np.ndarray) -> None:
        with atomic_path(self._embedding_file(sha1, model)) as tmp, tmp.open("wb") as fh:
            np.save(fh, np.asarray(vector, dtype=np.float32))
