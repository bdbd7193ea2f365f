"""Dataset formats: readers into a `SourceDataset` and writers of the canonical json, one module each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from detops.dataset.canonical import Dataset
from detops.errors import ParamsError
from detops.formats.coco import read_coco, write_coco
from detops.formats.source import SourceDataset
from detops.formats.voc import read_voc, write_voc
from detops.formats.yolo import read_yolo, write_yolo

Reader = Callable[[Path, Path | None], SourceDataset]
Writer = Callable[[Dataset, dict[int, Path], Path], list[str]]

READERS: dict[str, Reader] = {"coco": read_coco, "yolo": read_yolo, "voc": read_voc}
WRITERS: dict[str, Writer] = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}
FORMATS = tuple(READERS)


def read_source(fmt: str, root: Path, annotations: Path | None = None) -> SourceDataset:
    """Parse the annotations of the dataset at `root` (no image file is opened)."""
    return READERS[_checked(fmt)](root, annotations)


def write_as(fmt: str, dataset: Dataset, image_paths: dict[int, Path], out: Path) -> list[str]:
    """Write `dataset` into the existing, empty folder `out`; returns notes about what was left out."""
    return WRITERS[_checked(fmt)](dataset, image_paths, out)


def _checked(fmt: str) -> str:
    if fmt not in READERS:
        raise ParamsError(f"unknown dataset format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    return fmt
