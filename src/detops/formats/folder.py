"""A plain folder of images, without labels: every image file under the root, in a stable order.

New data often arrives unlabelled; its images can still be compared with the training data (their label
features are simply absent). Hidden files and folders (`.DS_Store`, `._x.jpg` from macOS copies) are left out.
"""

from __future__ import annotations

from pathlib import Path

from detops.formats.source import IMAGE_SUFFIXES, SourceDataset, SourceImage

FORMAT = "images"


def read_image_folder(root: Path, annotations: Path | None = None) -> SourceDataset:
    """`annotations` is unused: a plain folder has none (the signature is the readers' own). An empty folder gives
    an empty dataset; the caller says what that means."""
    images = [
        SourceImage(file_name=path.relative_to(root).as_posix(), where=str(root))
        for path in sorted(root.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.is_file()
    ]
    return SourceDataset(root=root, format=FORMAT, images=images, boxes=[], categories=[])
