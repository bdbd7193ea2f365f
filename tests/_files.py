"""What lies under a folder, byte for byte: the bad-input tests prove with it that the source data is untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Path relative to `root` -> content, for every file under `root` (or `root` itself, a file): a dict, so a
    failed comparison names the file that changed."""
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree_hash(*roots: Path) -> str:
    """One digest of the names and contents of every file under `roots`, for trees too large to hold as bytes."""
    digest = hashlib.sha256()
    for root in roots:
        for name, data in tree_bytes(root).items():
            digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()
