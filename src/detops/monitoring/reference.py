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
REFERENCE_ARTIFACT = "reference/features.parquet"  # in the champion's training run, logged at promotion


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
    """(table, where it came from): monitor.reference (a table or a dataset json), else the champion's table
    (logged at its promotion), else the train split."""
    given = ws.params.monitor.reference
    if not given and embedder is None:  # a logged table has no embeddings of today's model: recompute then
        champion = champion_reference(ws)
        if champion is not None:
            return champion
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


def champion_reference(ws: Workspace) -> tuple[pd.DataFrame, str] | None:
    """The feature table logged with the champion at its promotion (`reference/features.parquet` in its training
    run), or None when there is no registry, no champion, or a champion promoted without one."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from detops.errors import RegistryError
    from detops.registry.aliases import current_champion
    from detops.registry.client import connect

    try:
        client = connect(ws)
        champion = current_champion(client, ws.params.mlflow.registered_model, ws.params.promote.alias)
        if champion is None or not champion.run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(champion.run_id, REFERENCE_ARTIFACT, tmp))
            frame = _read_table(local)
    except (RegistryError, MlflowException, OSError):  # no registry, or a champion promoted without a table
        return None
    return frame, f"champion v{champion.version} ({REFERENCE_ARTIFACT} of run {champion.run_id})"
