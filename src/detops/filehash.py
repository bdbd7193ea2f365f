"""One way to hash a file's bytes, in chunks (checkpoints and datasets do not belong in memory twice), and each
large file once per process: its digest is remembered by path, size and modification time, so the Prefect cache
keys of the steps after `train` do not read the checkpoint again and again.

A file modified within the file system's timestamp granularity of its hashing could keep its size and mtime; such
a digest is not remembered (git's "racy" entries, same rule), so a remembered digest is never stale.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

RACY_NS = 2_000_000_000  # 2 s: coarser than any file system's mtime granularity detops runs on
MEMO_MIN_BYTES = 1 << 20  # smaller files (images, code) cost less to read than to remember by the million
_MEMO: dict[tuple[str, str, int, int, int, int], str] = {}


def file_digest(path: Path, algorithm: str = "sha1") -> str:
    """Hex digest of the file: sha1 names image content and code, md5 is what `dvc.lock` records."""
    path = Path(path)
    before = os.stat(path)
    key = (str(path.resolve()), algorithm, before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns)
    if key in _MEMO:
        return _MEMO[key]
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    after = os.stat(path)
    unchanged = (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    if unchanged and after.st_size >= MEMO_MIN_BYTES and time.time_ns() - after.st_mtime_ns > RACY_NS:
        _MEMO[key] = value
    return value
