"""Benchmark: how `detops split` scales.

1. Near-duplicate pairs by multi-index hashing on N random 64-bit pHashes (plus planted copies),
   against the plain n^2 numpy comparison on a slice (extrapolated to N).
2. The whole split decision (`plan_split`: groups, pins, grouped iterative stratification) on a
   synthetic dataset of N images, 10 classes, 0-8 boxes each.
3. Hashing real-size JPEGs (default 200 at 1280x960), 1 thread vs the default pool, and again from the cache.

Prints a markdown table.

    .venv/bin/python benchmarks/split_speed.py [--images 100000] [--files 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def _timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _codes(n: int, rng: np.random.Generator) -> np.ndarray:
    codes = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    copies = rng.integers(0, n, size=n // 10)  # 10 % of images get a near-copy with 2 bits flipped
    flips = np.uint64(1) << rng.integers(0, 64, size=(len(copies), 2)).astype(np.uint64)
    codes[rng.choice(n, size=len(copies), replace=False)] = codes[copies] ^ (flips[:, :1] | flips[:, 1:])
    return codes


def _dense_pairs(codes: np.ndarray, t: int) -> int:
    found = 0
    for start in range(0, len(codes), 512):
        block = codes[start : start + 512, :1]
        found += int((np.bitwise_count(block ^ codes[None, :, 0]) <= t).sum())
    return found


def _dataset(n: int, rng: np.random.Generator) -> dict[str, Any]:
    images = [{"id": i, "file_name": f"images/{i:07d}.jpg", "width": 640, "height": 480} for i in range(n)]
    counts = rng.integers(0, 9, size=n)
    classes = rng.choice(10, size=int(counts.sum()), p=np.arange(10, 0, -1) / 55)
    image_ids = np.repeat(np.arange(n), counts)
    annotations = [
        {"id": k, "image_id": int(i), "category_id": int(c), "bbox": [0, 0, 1, 1]}
        for k, (i, c) in enumerate(zip(image_ids, classes, strict=True))
    ]
    categories = [{"id": c, "name": f"class{c}"} for c in range(10)]
    return {"images": images, "annotations": annotations, "categories": categories}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()

    from PIL import Image

    from detops.config.split import SplitParams
    from detops.splitting.dedup import hash_images, near_duplicate_pairs
    from detops.splitting.plan import plan_split

    rng = np.random.default_rng(0)
    rows: list[tuple[str, str]] = []
    n = args.images
    codes = _codes(n, rng)
    pairs, seconds = _timed(near_duplicate_pairs, codes, 4, True)
    rows.append(
        (f"near-duplicate pairs, multi-index, {n:,} images (t=4, mirrored)", f"{seconds:.2f} s, {len(pairs):,} pairs")
    )
    probe = min(n, 5_000)
    _, dense = _timed(_dense_pairs, codes[:probe], 4)
    rows.append(
        (
            f"plain n^2 numpy, {probe:,} images -> {n:,} extrapolated",
            f"{dense:.2f} s -> {dense * (n / probe) ** 2:.0f} s",
        )
    )

    params = SplitParams()
    _, seconds = _timed(plan_split, _dataset(n, rng), params, codes, None)
    rows.append((f"plan_split, {n:,} images, 10 classes", f"{seconds:.2f} s ({n / seconds:,.0f} images/s)"))

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.files):
            path = Path(tmp) / f"{i}.jpg"
            noise = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
            Image.fromarray(noise).resize((1280, 960), Image.Resampling.BICUBIC).save(path, quality=90)
            paths.append(path)
        sha1s = [None] * len(paths)
        _, one = _timed(hash_images, paths, sha1s, None, 1)
        cache = Path(tmp) / "cache.json"
        _, pool = _timed(hash_images, paths, sha1s, cache)
        _, warm = _timed(hash_images, paths, sha1s, cache)
        rows.append((f"hash {args.files} JPEGs 1280x960, 1 thread", f"{one:.2f} s ({args.files / one:.0f} images/s)"))
        rows.append(
            (f"hash {args.files} JPEGs 1280x960, default pool", f"{pool:.2f} s ({args.files / pool:.0f} images/s)")
        )
        rows.append((f"hash {args.files} JPEGs, from the sha1 cache", f"{warm:.2f} s"))

    print("| what | time |\n| --- | --- |")
    for what, value in rows:
        print(f"| {what} | {value} |")


if __name__ == "__main__":
    main()
