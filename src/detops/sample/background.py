"""Textured backgrounds: a random colour gradient plus smooth multi-scale colour noise.

The noise is a random grid of values per octave, interpolated with Gaussian weights onto a quarter-size
canvas (small matrix products), then enlarged with bicubic resampling: smooth at every scale, and cheap
enough that the PNG encoder, not the texture, dominates the time per image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

# Grid nodes across the image per octave, and the amplitude of each octave relative to the first.
OCTAVES = ((2, 1.0), (4, 0.7), (8, 0.5), (16, 0.35), (32, 0.25))
# Share of the noise that is a colour shift rather than a change in brightness.
CHROMA = 0.5
# The noise is built at 1/COARSE of the image side (the finest octave still spans 2 coarse pixels per node).
COARSE = 4


@lru_cache(maxsize=32)
def _interpolation(nodes: int, size: int) -> np.ndarray:
    """(size, nodes) Gaussian weights, scaled so the interpolated 2-D field has about unit std."""
    positions = np.arange(size, dtype=np.float64)
    centres = np.linspace(0, size - 1, nodes)
    sigma = 0.6 * (size - 1) / max(nodes - 1, 1)
    weights = np.exp(-0.5 * ((positions[:, None] - centres[None, :]) / sigma) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    weights /= math.sqrt(float(np.mean(np.sum(weights**2, axis=1))))
    return weights


def textured_background(rng: np.random.Generator, size: int, texture: float) -> np.ndarray:
    """A (size, size, 3) float32 image in [0, 1]."""
    start, end = rng.uniform(0.1, 0.9, size=(2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    grid = (np.arange(size) - (size - 1) / 2) / size
    along = grid[None, :] * math.cos(angle) + grid[:, None] * math.sin(angle) + 0.5
    image = start + (end - start) * along[:, :, None]

    coarse = max(size // COARSE, 2 * OCTAVES[-1][0])
    noise = np.zeros((3, coarse, coarse))
    for nodes, amplitude in OCTAVES:
        values = rng.normal(size=(1, nodes, nodes)) + CHROMA * rng.normal(size=(3, nodes, nodes))
        weights = _interpolation(nodes, coarse)
        noise += (texture * amplitude / math.sqrt(1 + CHROMA**2)) * (weights @ values @ weights.T)
    for channel in range(3):
        layer = Image.fromarray(noise[channel].astype(np.float32))
        image[:, :, channel] += np.asarray(layer.resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(image, 0, 1).astype(np.float32)
