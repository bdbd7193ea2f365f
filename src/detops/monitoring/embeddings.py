"""Image embeddings from a detops checkpoint's backbone: its deepest feature map, average-pooled.

The backbone expects normalised input; that normalisation lives in `Detector.forward`, not in the backbone, so
it is applied here with the detector's own mean and std. Images are letterboxed to the checkpoint's input size,
exactly as the detector sees them. The model version (the checkpoint's sha1) keys the cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detops.filehash import file_digest

EMBEDDING_PREFIX = "emb_"


def embedding_columns(width: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{i:04d}" for i in range(width)]


class Embedder:
    """Batches of letterboxed RGB images -> pooled backbone features ([N, C] float32), on the CPU."""

    def __init__(self, checkpoint: Path) -> None:
        from detops.training.predict import load_detector

        self.model, meta = load_detector(checkpoint)
        self.image_size = int(meta["image_size"])
        self.version = file_digest(checkpoint)[:16]

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            deepest = self.model.backbone((batch - self.model.mean) / self.model.std)[-1]
            return deepest.mean(dim=(2, 3)).numpy().astype(np.float32)
