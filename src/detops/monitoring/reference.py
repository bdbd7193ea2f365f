"""The reference a check compares with: a feature table (the champion's, logged at promotion), or the features of
a dataset (the train split by default), computed here and cached per image."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from detops.dataset.canonical import Dataset, read_dataset
from detops.errors import DataError
from detops.monitoring.embeddings import Embedder
from detops.monitoring.features import dataset_features, embedder_for
from detops.monitoring.pixels import PIXEL_COLUMNS
from detops.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".parquet", ".csv")


def reference_features(ws: Workspace, dataset: Dataset, embedder: Embedder | None = None) -> pd.DataFrame:
    """The reference feature table of a dataset: what promotion logs with the champion, so monitoring needs neither
    the old images nor a re-computation. Embeddings by `embedder`, else by the model monitor.embeddings asks for.
    DataError when the dataset has no image, or none can be read."""
    if not dataset["images"]:
        raise DataError("the reference dataset has no images: drift needs something to compare with. Point "
                        "monitor.reference at a feature table or a dataset with images (or run `detops split`).")
    table = dataset_features(ws, dataset, embedder or embedder_for(ws), "Reference features")
    if table.frame.empty:
        raise DataError(f"none of the {len(dataset['images'])} reference images can be read: "
                        + "; ".join(table.skipped[:5]))
    return table.frame


def load_reference(ws: Workspace, embedder: Embedder | None = None) -> tuple[pd.DataFrame, str]:
    """(table, where it came from): monitor.reference (a table or a dataset json), else the train split."""
    given = ws.params.monitor.reference
    path = ws.resolve(given) if given else ws.split_json("train")
    if not path.is_file():
        fix = ("set monitor.reference to a feature table (.parquet, .csv) or a dataset json" if given else
               "run `detops split`, or set monitor.reference to a feature table or a dataset json")
        raise DataError(f"{path}: the reference is missing; {fix}.")
    label = ws.relative(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        return reference_features(ws, read_dataset(path), embedder), label
    return _read_table(path), label


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the reference feature table ({exc}).") from None
    missing = [c for c in PIXEL_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a feature table (no {', '.join(missing)} column); write one with "
                        "detops.monitoring.reference.reference_features.")
    if frame.empty:
        raise DataError(f"{path}: the reference feature table has no rows (no images): nothing to compare with.")
    return frame
