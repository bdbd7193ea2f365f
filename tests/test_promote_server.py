"""The promotion lifecycle on a real `mlflow server` whose backend store is PostgreSQL, with MLFLOW_TRACKING_URI
as the only switch: v1 promoted by the floor, v2 better by more than the threshold promoted, v3 better by less
rejected and tagged `challenger`, a re-run registering nothing, rollback to v1, the champion loading and
predicting. Each step is checked through MlflowClient.

Quality is controlled so the margins are certain: every candidate's test metric is set in its metrics.json, and
the champion's re-score (really downloaded from the server, loaded and run on today's test split) reports the
value its training run was given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import _mlflow_server
import pandas as pd
import pytest
from _requirements import POSTGRES_ENV, require_or_skip
from test_promote import (
    M,
    _no_inherited_tracking_uri,  # noqa: F401 - autouse here too
    aliases,
    new_run,
    promote,
    versions,
)
from test_train import make_workspace, run_train
from typer.testing import CliRunner

from detops.workspace import Workspace


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[_mlflow_server.Server]:
    """PostgreSQL + `mlflow server`, started once per test session (about 15 s)."""
    try:
        server = _mlflow_server.start()
    except _mlflow_server.Unavailable as exc:
        require_or_skip(False, f"PostgreSQL cannot run here, so there is no MLflow server to test against: {exc}",
                        POSTGRES_ENV)
    yield server
    server.stop()


class Quality:
    """The test metric each training run is given: written into metrics.json for the candidate, and reported by
    the champion's re-score in place of what the tiny model really scores."""

    def __init__(self, ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
        from detops.registry import rescore

        self.ws, self.values, self.rescored = ws, dict[str, float](), list[str]()
        real = rescore.champion_scorer

        def scorer(ws: Workspace, client: Any, gt: Any) -> Any:
            score = real(ws, client, gt)

            def controlled(mv: Any) -> Any:
                result = score(mv)  # the real download, load and prediction on today's split
                assert result.metrics[M] is not None
                self.rescored.append(str(mv.version))
                return replace(result, metrics={**result.metrics, M: self.values[mv.run_id]})

            return controlled

        monkeypatch.setattr(rescore, "champion_scorer", scorer)

    def candidate(self, value: float) -> None:
        from detops.tracking import read_run_id

        self.values[str(read_run_id(self.ws))] = value
        path = self.ws.reports / "metrics.json"
        metrics = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**metrics, M: value}), encoding="utf-8")


@pytest.mark.slow
def test_promotion_lifecycle_on_a_postgres_backed_server(mlflow_server: _mlflow_server.Server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    from detops.cli import app
    from detops.steps import evaluate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)  # promote sets them; restored after the test
    ws = make_workspace(tmp_path / "ws", "promote.min_metric=0.2", "promote.min_improvement=0.05")
    run_train(ws)  # logs to the server
    evaluate.run(ws)
    quality = Quality(ws, monkeypatch)
    client = MlflowClient(mlflow_server.url)
    name = ws.params.mlflow.registered_model

    def tags(version: str) -> dict[str, str]:
        return dict(client.get_model_version(name, version).tags)

    quality.candidate(0.30)
    promote(ws)
    assert aliases(ws) == {"champion": "1"}
    assert tags("1")["detops.promotion.reason"].startswith("no champion yet; the floor decides")
    assert client.get_model_version(name, "1").source.startswith("models:/m-")

    new_run(ws)
    quality.candidate(0.40)  # 0.40 >= 0.30 + 0.05
    promote(ws)
    assert aliases(ws) == {"champion": "2", "previous-champion": "1"} and quality.rescored == ["1"]
    assert float(tags("2")["detops.promotion.champion_value"]) == 0.30

    new_run(ws)
    quality.candidate(0.42)  # better than 0.40, by less than 0.05
    promote(ws)
    assert aliases(ws) == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    assert tags("3")["detops.promotion.decision"] == "rejected"
    assert float(tags("3")["detops.promotion.threshold"]) == pytest.approx(0.45)
    assert tags("2")["detops.promotion.challenge.decision"] == "kept"

    promote(ws)  # the same run again: no new version, same aliases
    assert [str(mv.version) for mv in versions(ws)] == ["1", "2", "3"]
    assert aliases(ws)["challenger"] == "3"

    rolled = CliRunner().invoke(app, ["--workspace", str(ws.root), "registry", "rollback", "--to", "1",
                                      "--reason", "v2 misses boxes at night"])
    assert rolled.exit_code == 0, rolled.output
    assert aliases(ws) == {"champion": "1", "previous-champion": "2", "challenger": "3"}
    assert tags("1")["detops.rollback.reason"] == "v2 misses boxes at night" and tags("2")["detops.rollback.role"] \
        == "demoted"

    mlflow.set_tracking_uri(mlflow_server.url)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion", model_config={"score_threshold": 0.01})
    images = sorted((ws.root / "data" / "raw" / "tiny" / "images").glob("*.png"))[:3]
    out = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in images]}))
    assert len(out) and set(out["class_name"]) <= {"box", "disc"} and set(out["image"]) <= {0, 1, 2}
