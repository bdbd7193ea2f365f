"""The registry against a real MLflow SQLite store: aliases, rollback, prune, listing, the lock and the race it
prevents. One store per module (creating its tables takes a second); each test registers its own model name."""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detops.config import load_params
from detops.errors import PromotionError, RegistryError
from detops.registry import aliases as reg
from detops.registry.client import connect
from detops.registry.lock import lock_file, lock_name, promotion_lock
from detops.registry.transaction import ChampionScore, promote_version
from detops.workspace import Workspace

M = "test/map"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


class Registry:
    """A workspace pointing at the shared store, with one registered model and helpers to add versions."""

    def __init__(self, root: Path, store: Path, name: str, *extra: str) -> None:
        overrides = [f"mlflow.tracking_uri=sqlite:///{store / 'mlflow.db'}", f"mlflow.registered_model={name}",
                     "promote.min_metric=0.1", "promote.min_improvement=0.005", *extra]
        self.ws = Workspace.at(root, load_params(None, overrides))
        self.name = name
        self.client = connect(self.ws)
        self.store = store
        self.scores: dict[str, float] = {}
        self.client.create_registered_model(name)
        self.experiment = self._experiment()

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name("registry-tests")
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment("registry-tests", artifact_location=(self.store / "art").as_uri()))

    def add(self, score: float, data_hash: str = "abc123") -> str:
        """A version whose source is a small file artifact of its own run; its score is under our control."""
        run = self.client.create_run(self.experiment)
        weights = self.store / f"{run.info.run_id}.txt"
        weights.write_text(f"weights {score}")
        self.client.log_artifact(run.info.run_id, str(weights), "model")
        self.client.log_metric(run.info.run_id, M, score)
        self.client.set_tag(run.info.run_id, "data.content_hash", data_hash)
        mv = self.client.create_model_version(
            self.name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        self.scores[str(mv.version)] = score
        return str(mv.version)

    def score(self, mv: Any) -> ChampionScore:
        return ChampionScore({M: self.scores[str(mv.version)]})

    def promote(self, version: str, **kw: Any) -> Any:
        metrics = {M: self.scores[version]}
        return promote_version(self.client, self.ws, version, metrics, score_champion=self.score, **kw)

    def aliases(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()}

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)


@pytest.fixture
def registry(request: pytest.FixtureRequest, tmp_path: Path, store: Path) -> Registry:
    unique = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:6]  # parametrized ids may differ only in '/'
    readable = re.sub(r"[^\w-]+", "-", request.node.name)[:60]
    return Registry(tmp_path, store, f"{readable}-{unique}")


def test_floor_then_better_then_challenger(registry: Registry) -> None:
    v1, v2, v3 = registry.add(0.50), registry.add(0.60), registry.add(0.602)
    first = registry.promote(v1)
    assert first.decision.promote and not first.decision.has_champion
    assert registry.aliases() == {"champion": v1}

    second = registry.promote(v2)
    assert second.decision.promote and second.champion_version == v1
    assert registry.aliases() == {"champion": v2, "previous-champion": v1}

    third = registry.promote(v3)
    assert not third.decision.promote
    assert registry.aliases() == {"champion": v2, "previous-champion": v1, "challenger": v3}
    tags = registry.tags(v3)
    assert tags["detops.promotion.decision"] == "rejected"
    assert float(tags["detops.promotion.candidate_value"]) == 0.602
    assert float(tags["detops.promotion.champion_value"]) == 0.60
    assert float(tags["detops.promotion.threshold"]) == pytest.approx(0.605)
    assert tags["detops.promotion.champion_version"] == v2
    assert "< champion" in tags["detops.promotion.reason"]
    assert registry.tags(v2)["detops.promotion.challenge.decision"] == "kept"
    assert registry.tags(v2)["detops.promotion.challenge.candidate_version"] == v3
    assert registry.tags(v1)["detops.promotion.challenge.decision"] == "replaced"

    summary = third.to_markdown()
    assert "not promoted" in summary and "| threshold | 0.6050 |" in summary and "| champion after | v2 |" in summary
    assert third.to_dict()["decision"]["champion_value"] == 0.60

    again = registry.promote(v2)  # re-running promote for the champion moves nothing, keeps its record
    assert not again.aliases.moved and registry.aliases()["champion"] == v2
    assert registry.tags(v2)["detops.promotion.decision"] == "promoted"


def test_a_promoted_challenger_loses_the_challenger_alias(registry: Registry) -> None:
    v1, v2 = registry.add(0.5), registry.add(0.501)
    registry.promote(v1)
    registry.promote(v2)
    assert registry.aliases()["challenger"] == v2
    registry.scores[v1] = 0.4  # re-scored on a new test split, the champion is worse now
    assert registry.promote(v2).decision.promote
    assert registry.aliases() == {"champion": v2, "previous-champion": v1}


def test_floor_failure_with_no_champion_sets_challenger(registry: Registry) -> None:
    v1 = registry.add(0.05)
    assert not registry.promote(v1).decision.promote
    assert registry.aliases() == {"challenger": v1}


def test_unknown_metric_and_unloadable_champion_promote_nothing(registry: Registry) -> None:
    v1, v2 = registry.add(0.5), registry.add(0.9)
    registry.promote(v1)
    with pytest.raises(PromotionError, match="test/map"):
        promote_version(registry.client, registry.ws, v2, {"val/map": 0.9}, score_champion=registry.score)

    def broken(mv: Any) -> ChampionScore:
        raise RegistryError(f"champion v{mv.version}: artifacts are missing")

    with pytest.raises(RegistryError, match="artifacts are missing"):
        promote_version(registry.client, registry.ws, v2, {M: 0.9}, score_champion=broken)
    assert registry.aliases() == {"champion": v1}
    assert "detops.promotion.decision" not in registry.tags(v2)


def test_rollback_both_ways_and_to_a_version(registry: Registry) -> None:
    v1, v2, v3 = registry.add(0.5), registry.add(0.6), registry.add(0.7)
    registry.promote(v1)
    registry.promote(v2)

    change = reg.rollback(registry.client, registry.name, reason="v2 drops boxes at night")
    assert (change.champion, change.previous) == (v1, v2)
    assert registry.aliases() == {"champion": v1, "previous-champion": v2}
    assert registry.tags(v1)["detops.rollback.reason"] == "v2 drops boxes at night"
    assert registry.tags(v1)["detops.rollback.from_version"] == v2
    assert registry.tags(v2)["detops.rollback.role"] == "demoted"

    reg.rollback(registry.client, registry.name, reason="false alarm")  # undo the undo
    assert registry.aliases() == {"champion": v2, "previous-champion": v1}

    reg.rollback(registry.client, registry.name, reason="pin v3", to_version=v3)
    assert registry.aliases() == {"champion": v3, "previous-champion": v2}


def test_rollback_errors_name_the_fix(registry: Registry) -> None:
    v1, v2 = registry.add(0.5), registry.add(0.6)
    with pytest.raises(RegistryError, match="no 'champion' alias"):
        reg.rollback(registry.client, registry.name, reason="x")
    registry.promote(v1)
    with pytest.raises(RegistryError, match=r"no 'previous-champion' alias .*--to VERSION \(versions: 1, 2\)"):
        reg.rollback(registry.client, registry.name, reason="x")
    with pytest.raises(RegistryError, match=r"has no version 9 \(versions: 1, 2\)"):
        reg.rollback(registry.client, registry.name, reason="x", to_version="9")
    with pytest.raises(RegistryError, match="not a version number"):
        reg.rollback(registry.client, registry.name, reason="x", to_version="latest")
    with pytest.raises(RegistryError, match="already the champion"):
        reg.rollback(registry.client, registry.name, reason="x", to_version=v1)
    with pytest.raises(RegistryError, match="needs a reason"):
        reg.rollback(registry.client, registry.name, reason="  ", to_version=v2)
    assert registry.aliases() == {"champion": v1}


def test_prune_keeps_champion_previous_and_newest(registry: Registry) -> None:
    versions = [registry.add(0.1 * (i + 1)) for i in range(6)]
    registry.promote(versions[0])
    registry.promote(versions[1])  # champion v2, previous v1
    doomed_files = [
        Path(registry.client.get_run(registry.client.get_model_version(registry.name, v).run_id).info.artifact_uri
             .removeprefix("file://")) / "model"
        for v in versions
    ]
    assert all(p.is_dir() for p in doomed_files)

    result = reg.prune(registry.client, registry.name, keep=2)
    assert sorted(result.deleted, key=int) == ["3", "4"]
    assert sorted(result.kept, key=int) == ["1", "2", "5", "6"]
    left = sorted(int(mv.version) for mv in registry.client.search_model_versions(f"name='{registry.name}'"))
    assert left == [1, 2, 5, 6]
    assert [p.is_dir() for p in doomed_files] == [True, True, False, False, True, True]
    assert registry.aliases() == {"champion": "2", "previous-champion": "1"}
    assert reg.prune(registry.client, registry.name, keep=0).deleted == ["6", "5"]
    with pytest.raises(RegistryError, match="--keep must be >= 0"):
        reg.prune(registry.client, registry.name, keep=-1)


def test_prune_deletes_logged_model_artifacts(registry: Registry) -> None:
    """MLflow 3 `log_model` registers `models:/m-...` sources: their folder and record go too."""
    import mlflow

    client = registry.client
    run = client.create_run(registry.experiment)
    folder = registry.store / f"lm-{registry.name}"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}")
    logged = client.create_logged_model(registry.experiment, source_run_id=run.info.run_id, name="model")
    client.log_model_artifacts(logged.model_id, str(folder))
    # MLflow resolves a models:/ source through its global tracking URI (which wins over MLFLOW_TRACKING_URI once
    # an earlier test or step has set it) when the version is created
    mlflow.set_tracking_uri(f"sqlite:///{registry.store / 'mlflow.db'}")
    try:
        old = str(client.create_model_version(registry.name, f"models:/{logged.model_id}", run.info.run_id).version)
    finally:
        mlflow.set_tracking_uri(None)
    registry.add(0.5)
    location = Path(logged.artifact_location.removeprefix("file://"))
    assert (location / "MLmodel").is_file()
    result = reg.prune(client, registry.name, keep=1)
    assert result.deleted == [old] and not result.notes, result.notes
    assert not location.exists()


def test_list_rows(registry: Registry) -> None:
    v1, v2 = registry.add(0.5, data_hash="hash-one"), registry.add(0.6, data_hash="hash-two")
    registry.promote(v1)
    registry.promote(v2)
    rows = reg.list_versions(registry.client, registry.name, metric=M)
    assert [r.version for r in rows] == [v2, v1]
    assert rows[0].aliases == ("champion",) and rows[1].aliases == ("previous-champion",)
    assert [r.metric for r in rows] == [0.6, 0.5]
    assert [r.data_hash for r in rows] == ["hash-two", "hash-one"]
    assert abs(rows[0].created.timestamp() - time.time()) < 300
    assert rows[0].run_id


def test_current_champion_of_a_missing_model_is_none(registry: Registry) -> None:
    assert reg.current_champion(registry.client, "never-registered") is None
    with pytest.raises(RegistryError, match="no registered model named 'never-registered'"):
        reg.list_versions(registry.client, "never-registered", metric=M)


@pytest.mark.parametrize("bad", ["a/b", "a:b", "", "..", "./a"])
def test_invalid_model_name_is_a_clear_error(registry: Registry, bad: str) -> None:
    with pytest.raises(RegistryError, match="invalid registered model name"):
        reg.current_champion(registry.client, bad)


def test_server_down_fails_within_15_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    for var in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(var, raising=False)  # restored after the test

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = Workspace.at(tmp_path, load_params(None, [f"mlflow.tracking_uri=http://127.0.0.1:{port}"]))
    start = time.monotonic()
    refused = r"tracking server http://127.0.0.1:\d+ is unreachable \(Connection refused\)"
    with pytest.raises(RegistryError, match=refused):
        reg.current_champion(connect(ws), ws.params.mlflow.registered_model)
    assert time.monotonic() - start < 15
    assert (os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) == ("10", "2")


def test_file_lock_times_out_with_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path, load_params(None, ["promote.lock_timeout=0.2"]))
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with promotion_lock(ws):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(PromotionError, match=r"promote.lock_timeout \(0.2 s\)"), promotion_lock(ws):
            pass
    finally:
        release.set()
        thread.join()
    assert lock_file(ws).parent == tmp_path / ".detops"
    with promotion_lock(ws):  # free again
        pass


def test_prefect_lock_uses_a_strict_global_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.concurrency.sync as sync
    from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

    ws = Workspace.at(tmp_path, load_params(None, ["promote.lock=prefect", "promote.lock_timeout=30"]))
    calls: list[tuple[Any, ...]] = []

    @contextlib.contextmanager
    def fake(names: str, occupy: int, timeout_seconds: float, strict: bool) -> Iterator[None]:
        calls.append((names, occupy, timeout_seconds, strict))
        yield

    monkeypatch.setattr(sync, "concurrency", fake)
    with promotion_lock(ws):
        pass
    assert calls == [("detops-promote-detops-detector", 1, 30.0, True)]
    assert lock_name(ws) == "detops-promote-detops-detector"
    assert not lock_file(ws).exists(), "the prefect lock never falls back to the file lock"

    @contextlib.contextmanager
    def missing(*args: Any, **kwargs: Any) -> Iterator[None]:
        raise ConcurrencySlotAcquisitionError("limit not found")
        yield

    monkeypatch.setattr(sync, "concurrency", missing)
    create = "prefect gcl create detops-promote-detops-detector --limit 1"
    with pytest.raises(PromotionError, match=create), promotion_lock(ws):
        pass
    monkeypatch.setattr(sync, "concurrency", fake)
    with pytest.raises(ValueError, match="inside"), promotion_lock(ws):  # errors from the body are not the lock's
        raise ValueError("inside")


class _Announcing:
    """Wraps a lock: calls `on_wait` just before blocking on it, so the test knows B is waiting for A."""

    def __init__(self, inner: contextlib.AbstractContextManager[Any], on_wait: threading.Event) -> None:
        self.inner, self.on_wait = inner, on_wait

    def __enter__(self) -> Any:
        self.on_wait.set()
        return self.inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self.inner.__exit__(*exc)


def _race(registry: Registry, *, locked: bool) -> str:
    """A (0.7) and B (0.6) both beat the champion (0.5). Forced interleaving: A reads the champion first and
    waits until B has read it too (or, with the lock, until B is blocked on the lock); B finishes last."""
    old, a, b = registry.add(0.5), registry.add(0.7), registry.add(0.6)
    registry.promote(old)
    a_reading, b_progressed, a_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def scorer(who: str) -> Any:
        def score(mv: Any) -> ChampionScore:
            if who == "A":
                a_reading.set()
                assert b_progressed.wait(20), "B never reached the champion or the lock"
            else:
                b_progressed.set()
                assert a_done.wait(20), "A never finished"
            return registry.score(mv)
        return score

    def lock_for(who: str) -> contextlib.AbstractContextManager[Any]:
        if not locked:
            return contextlib.nullcontext()
        return promotion_lock(registry.ws) if who == "A" else _Announcing(promotion_lock(registry.ws), b_progressed)

    def run(who: str, version: str) -> None:
        try:
            if who == "B":
                assert a_reading.wait(20)
            promote_version(registry.client, registry.ws, version, {M: registry.scores[version]},
                            score_champion=scorer(who), lock=lock_for(who))
        except BaseException as exc:
            errors.append(exc)
        finally:
            if who == "A":
                a_done.set()

    threads = [threading.Thread(target=run, args=("A", a)), threading.Thread(target=run, args=("B", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    champion = registry.aliases()["champion"]
    return "A" if champion == a else "B" if champion == b else "old"


def test_race_with_the_lock_keeps_the_better_candidate(registry: Registry) -> None:
    assert _race(registry, locked=True) == "A"
    assert registry.aliases()["challenger"] == "3"  # B was re-gated against A and lost


@pytest.mark.slow
def test_race_with_the_prefect_lock_on_a_real_server_keeps_the_better_candidate(tmp_path: Path, store: Path) -> None:
    """The same forced race with `promote.lock: prefect`, against a real (temporary) Prefect server holding the
    strict global concurrency limit that `detops deploy` creates: the limit serialises the two promotions."""
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.deploy.server import ensure_promotion_limit

    with prefect_test_harness(server_startup_timeout=120):
        registry = Registry(tmp_path, store, "prefect-lock-race", "promote.lock=prefect", "promote.lock_timeout=60")
        with get_client(sync_client=True) as client:
            ensure_promotion_limit(client, registry.ws)
        assert _race(registry, locked=True) == "A"
        assert registry.aliases()["challenger"] == "3"


def test_race_without_the_lock_lets_the_worse_candidate_win(registry: Registry) -> None:
    """The control: proves the interleaving really races, so the locked test can fail."""
    assert _race(registry, locked=False) == "B"
