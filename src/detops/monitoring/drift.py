"""The Evidently comparison: one pinned test per feature column, and the embedding tested as a whole.

The report holds Evidently's `DriftedColumnsCount` and one `ValueDrift` per column (each rendered with its column
name and whether it drifted, so the HTML says it in plain text), plus `EmbeddingsDrift` when both sides carry
embeddings. The results are read back through Evidently's result objects, keyed by each metric's id: a column
drifted when Evidently's own test on its `ValueDrift` failed.

Embeddings are reduced by PCA fitted on the reference only (a drifted batch must not shape the axes it is measured
on); the embedding drifted when more than `embedding_drift_share` of the components drifted, each tested like a
column (Evidently's ratio method).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detops.atomic import atomic_path
from detops.config.monitor import MonitorParams
from detops.errors import DataError
from detops.monitoring.features import MODEL_COLUMN, embedding_names, feature_names
from detops.monitoring.verdict import matches

if TYPE_CHECKING:
    import pandas as pd

EMBEDDING = "embedding"  # the embedding's name in the report, the drifted columns and critical_columns


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass
class Comparison:
    columns: list[ColumnDrift]
    share: float  # Evidently's share of drifted feature columns (the embedding is not one of them)
    embedding: ColumnDrift | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        every = [*self.columns, *([self.embedding] if self.embedding else [])]
        return [c.column for c in every if c.drifted]

    @property
    def tested(self) -> int:
        return len(self.columns) + (1 if self.embedding else 0)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(c) for c in self.columns], "share": self.share,
                "embedding": asdict(self.embedding) if self.embedding else None}


def column_test(column: str, params: MonitorParams) -> tuple[str, float]:
    """The first `per_column` entry whose name or glob matches, else `method`/`threshold`."""
    for pattern, test in params.per_column.items():
        if matches(column, [pattern]):
            return test.method, test.threshold
    return params.method, params.threshold


def compare(reference: pd.DataFrame, current: pd.DataFrame, params: MonitorParams, html: Path, json: Path
            ) -> Comparison:
    """Run the report on the columns both tables have values for, save it as HTML and JSON, read the results."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.core.metric_types import CountValue, SingleValue, TestStatus
    from evidently.metrics import DriftedColumnsCount, EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import RatioDriftMethod

    columns, notes = _common_columns(reference, current)
    tests = {c: column_test(c, params) for c in columns}
    count = DriftedColumnsCount(columns=columns, drift_share=params.drift_share,
                                per_column_method={c: m for c, (m, _) in tests.items()},
                                per_column_threshold={c: t for c, (_, t) in tests.items()})
    per_column = {c: ValueDrift(column=c, method=m, threshold=t) for c, (m, t) in tests.items()}
    ref, cur, components = _with_embedding(reference, current, columns, params)
    embedding = None
    if components:
        embedding = EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=RatioDriftMethod(
            component_stattest=params.method, component_stattest_threshold=params.threshold,
            threshold=params.embedding_drift_share))
    definition = DataDefinition(numerical_columns=columns, embeddings={EMBEDDING: components} if components else None)
    report = Report([count, *per_column.values(), *([embedding] if embedding else [])], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy on constant columns, inside Evidently's plots
        snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                              Dataset.from_pandas(ref, data_definition=definition))
    _save(snapshot.save_html, html)
    _save(snapshot.save_json, json)

    results = snapshot.metric_results
    counted = results[count.metric_id]
    assert isinstance(counted, CountValue)
    drifts = []
    for column, metric in per_column.items():
        result = results[metric.metric_id]
        assert isinstance(result, SingleValue)
        method, threshold = tests[column]
        if not result.tests:  # the verdict must never read "no drift" out of a missing test
            raise RuntimeError(f"Evidently returned no drift test for column {column!r}")
        failed = any(t.status == TestStatus.FAIL for t in result.tests)
        drifts.append(ColumnDrift(column, method, threshold, float(result.value), failed))
    out = Comparison(drifts, float(counted.share.value), notes=notes)
    if embedding is not None:
        score = results[embedding.metric_id]
        assert isinstance(score, SingleValue)
        share = params.embedding_drift_share
        out.embedding = ColumnDrift(EMBEDDING, "ratio", share, float(score.value), float(score.value) > share)
    return out


def _common_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Feature columns both sides have values for, in the reference's order; notes on the others."""
    notes = []
    ours, theirs = feature_names(current), feature_names(reference)
    only_current = [c for c in ours if c not in theirs]
    only_reference = [c for c in theirs if c not in ours]
    if only_current:
        notes.append(f"not in the reference, so not tested: {', '.join(only_current)}")
    if only_reference:
        notes.append(f"not in the current data (no labels?), so not tested: {', '.join(only_reference)}")
    shared = [c for c in theirs if c in ours]
    empty = [c for c in shared if reference[c].notna().sum() == 0 or current[c].notna().sum() == 0]
    if empty:
        notes.append(f"no values on one side (e.g. no boxes), so not tested: {', '.join(empty)}")
    return [c for c in shared if c not in empty], notes


def _with_embedding(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], params: MonitorParams
                    ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """`columns` of both tables, plus the embeddings' PCA components (fitted on the reference) when they are on."""
    ref, cur = reference[columns], current[columns]
    if not params.embeddings:
        return ref, cur, []
    ours, theirs = embedding_names(current), embedding_names(reference)
    if not theirs:
        raise DataError("monitor.embeddings is on but the reference feature table has no embedding columns; "
                        "recompute the reference with embeddings on, or set monitor.embeddings=false.")
    models = ({str(m) for m in reference[MODEL_COLUMN].dropna().unique()}
              | {str(m) for m in current[MODEL_COLUMN].dropna().unique()})
    if ours != theirs or len(models) != 1:
        raise DataError(f"the reference and the current embeddings come from different models ({', '.join(models)});"
                        " recompute the reference with monitor.embedding_checkpoint, or compare without embeddings.")
    import pandas as pd
    from sklearn.decomposition import PCA

    embedded = reference[theirs].notna().all(axis=1)  # prediction rows past the image rows have none
    vectors = reference.loc[embedded, theirs].to_numpy()
    n = min(params.embedding_components, len(vectors), len(theirs))
    pca = PCA(n_components=n, random_state=0).fit(vectors)
    names = [f"{EMBEDDING}_pc{i + 1}" for i in range(n)]
    components = pd.DataFrame(pca.transform(vectors), index=reference.index[embedded], columns=names)
    ref = ref.join(components)
    cur = cur.assign(**dict(zip(names, pca.transform(current[ours].to_numpy()).T, strict=True)))
    return ref, cur, names


def _save(save: Any, target: Path) -> None:
    """Evidently's save methods write nothing, silently, when given a Path: give them a str, and check."""
    with atomic_path(target) as tmp:
        save(str(tmp))
        if tmp.stat().st_size == 0:
            raise RuntimeError(f"Evidently wrote nothing to {target}")
