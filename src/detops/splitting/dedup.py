"""Near-duplicate detection with 64-bit perceptual hashes (pHash, via `imagehash`).

Each image gets its pHash and, optionally, the pHash of its mirror image, so a horizontally flipped
copy (the most common augmentation) is found too. Hashes are cached by the image's content sha1, so a
re-split only hashes new images.

Pairs within a Hamming distance `t` are found by multi-index hashing (Norouzi et al., "Fast Search in
Hamming Space with Multi-Index Hashing", CVPR 2012): the 64 bits are cut into `t + 1` blocks; by the
pigeonhole principle two codes within distance `t` agree exactly on at least one block, so only codes
that share a block value are compared. That is near-linear for spread-out hashes, instead of n^2.

What pHash does and does not catch: it is robust to re-encoding, resizing, brightness and small
noise (0-4 bits), not to crops or shears (a 5 % crop moves it 10-18 bits). On the Roboflow-augmented
chess photos (crop, shear, flip), copies of one photo lie a median 14 bits apart even mirror-aware,
while different photos of the same board can lie 0-2 bits apart: no threshold separates them.
Copies made that way must be grouped by name or attribute (`split.group_by`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np

from detops.atomic import write_json
from detops.errors import DataError
from detops.filehash import file_digest
from detops.progress import track

HASH_BITS = 64
# Decoding at reduced scale (JPEG draft mode) is 5-20x faster on large photos and pHash looks at a
# 32x32 thumbnail anyway; the method name is stored in the cache so a change invalidates it.
DRAFT_SIZE = (128, 128)
CACHE_METHOD = "imagehash.phash-64/draft128/exif/mirror"
MAX_WORKERS = 8


def phash_codes(path: Path) -> tuple[int, int]:
    """(pHash, pHash of the mirror image) of the displayed image at `path`, as 64-bit ints."""
    import imagehash
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            opened.draft("L", DRAFT_SIZE)
            image = ImageOps.exif_transpose(opened).convert("L")
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found; re-run `detops import`.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode the image for hashing ({exc}).") from exc
    plain = imagehash.phash(image)
    mirrored = imagehash.phash(ImageOps.mirror(image))
    return int(str(plain), 16), int(str(mirrored), 16)


def file_sha1(path: Path) -> str:
    try:
        return file_digest(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image file ({exc}).") from exc


def load_cache(path: Path) -> dict[str, tuple[int, int]]:
    """sha1 -> codes; a missing, unreadable or outdated cache is simply empty (it is only a cache)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        if payload.get("method") != CACHE_METHOD:
            return {}
        return {sha1: (int(h, 16), int(m, 16)) for sha1, (h, m) in payload["hashes"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def save_cache(path: Path, codes: dict[str, tuple[int, int]]) -> None:
    hashes = {sha1: [f"{h:016x}", f"{m:016x}"] for sha1, (h, m) in sorted(codes.items())}
    write_json(Path(path), {"method": CACHE_METHOD, "hashes": hashes}, indent=None)


def hash_images(
    paths: Sequence[Path], sha1s: Sequence[str | None], cache_path: Path | None, workers: int = 0
) -> tuple[np.ndarray, int]:
    """Codes of every image as a (n, 2) uint64 array [pHash, mirrored pHash], and how many were computed.

    Cached codes are reused by sha1 (computed from the file when the image record lacks one); the
    others are hashed on a thread pool (PIL decodes outside the GIL). The cache is rewritten to hold
    exactly the current images.
    """
    cache = load_cache(cache_path) if cache_path else {}
    keys = [sha1 or file_sha1(path) for path, sha1 in zip(paths, sha1s, strict=True)]
    todo = sorted({key: path for key, path in zip(keys, paths, strict=True) if key not in cache}.items())
    if todo:
        n_workers = workers or min(MAX_WORKERS, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            results = pool.map(phash_codes, [path for _, path in todo])
            computed = list(track(results, "Hashing images", total=len(todo)))
        cache.update({key: codes for (key, _), codes in zip(todo, computed, strict=True)})
    current = {key: cache[key] for key in keys}
    if cache_path and (todo or len(current) != len(cache)):
        save_cache(cache_path, current)
    codes = np.array([current[key] for key in keys], dtype=np.uint64).reshape(len(keys), 2)
    return codes, len(todo)


def _block_masks(max_distance: int) -> list[tuple[int, np.uint64]]:
    """(shift, mask) of `max_distance + 1` disjoint bit blocks that cover all 64 bits."""
    n_blocks = max_distance + 1
    edges = np.linspace(0, HASH_BITS, n_blocks + 1).round().astype(int)
    return [(int(lo), np.uint64((1 << int(hi - lo)) - 1)) for lo, hi in pairwise(edges)]


def _same_key_pairs(keys: np.ndarray) -> np.ndarray:
    """All index pairs (i, j) with keys[i] == keys[j], i != j, each once, as a (m, 2) array."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    found = []
    for offset in range(1, len(keys)):
        same = sorted_keys[offset:] == sorted_keys[:-offset]
        if not same.any():  # sorted: nothing equal at this offset means nothing further either
            break
        found.append(np.stack([order[:-offset][same], order[offset:][same]], axis=1))
    return np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)


def near_duplicate_pairs(codes: np.ndarray, max_distance: int, mirrored: bool = True) -> np.ndarray:
    """Image index pairs (i < j) whose hashes lie within `max_distance` bits, as a sorted (m, 2) array.

    `codes` is (n, 2) [pHash, mirrored pHash]; with `mirrored`, a pair also counts when one image is
    close to the other's mirror.
    """
    columns = 2 if mirrored else 1
    flat = np.ascontiguousarray(codes[:, :columns]).reshape(-1)
    owner = np.repeat(np.arange(len(codes)), columns)
    found = [np.empty((0, 2), dtype=np.int64)]
    for shift, mask in _block_masks(max_distance):
        a, b = _same_key_pairs((flat >> np.uint64(shift)) & mask).T
        keep = (owner[a] != owner[b]) & (np.bitwise_count(flat[a] ^ flat[b]) <= max_distance)
        found.append(owner[np.stack([a[keep], b[keep]], axis=1)])
    # A pair can be found in several blocks and through the mirror too: keep each image pair once.
    images = np.sort(np.concatenate(found), axis=1)
    return np.unique(images, axis=0) if len(images) else images
