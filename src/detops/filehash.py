"""One way to hash a file's bytes, in chunks (checkpoints and datasets do not belong in memory twice)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path, algorithm: str = "sha1") -> str:
    """Hex digest of the file: sha1 names image content and code, md5 is what `dvc.lock` records."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
