"""The accuracy share of an accepted batch, as the dataset carries it: the accepted copy lists the share's files
(`SHARE_FILE`), `import` marks those images (`SHARE_KEY`), and they keep the mark through `split`, so `promote` finds
the production images its candidate did not train on. Kept apart from `monitoring.production` so that `import`
reaches no scorer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detops.dataset.canonical import Dataset

SHARE_FILE = ".accuracy-share"  # in an accepted batch's copy: its share's file names, one per line
SHARE_KEY = "accuracy_share"  # on a dataset image: it belongs to a batch's accuracy share


def write_share_list(folder: Path, gt: Dataset, kept: list[str]) -> None:
    """The share's file names still in the accepted copy `folder` (one per line): what import marks."""
    names = sorted({str(im["file_name"]) for im in gt["images"]} & set(kept))
    if names:
        (folder / SHARE_FILE).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def mark_share(folder: Path, dataset: Dataset) -> Dataset:
    """`dataset` (an accepted batch read from `folder`) with its share's images marked `accuracy_share`."""
    path = folder / SHARE_FILE
    if not path.is_file():
        return dataset
    share = set(path.read_text(encoding="utf-8").split("\n")) - {""}
    images = [{**im, SHARE_KEY: True} if str(im["file_name"]) in share else im for im in dataset["images"]]
    return {**dataset, "images": images}
