"""Object storage through fsspec, for the state that outlives a pod: the landing prefix, resume checkpoints, and
the inputs a multi-node run sends its other nodes. Credentials and endpoint come from the environment (a pod's
Secret); any fsspec URL works (s3://, gs://, az://, file://)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def is_url(location: str | Path) -> bool:
    """Whether a configured location names object storage (or any fsspec URL) rather than a folder here."""
    return "://" in str(location)


def open_fs(url: str) -> tuple[Any, str]:
    """The file system behind `url` and the prefix's path on it (no trailing slash). Never a cached instance: its
    listings could predate what another pod wrote since."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(url, skip_instance_cache=True)
    return fs, str(root).rstrip("/")
