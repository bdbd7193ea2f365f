"""Production accuracy and its alarm, on a champion that learned the easy sample (trained, evaluated, exported and
promoted by the steps in a local SQLite store):
- the bootstrap's accumulation equals the one scorer's mAP at weight 1, and a re-run of COCO on a resampled list;
- a labelled batch of darker images (the generator's other seed, labels kept) scores below the champion's test mAP,
  its interval too; the report, the MLflow `production` run and, on a real Prefect server, the event and the webhook
  notification say so, and no retraining starts;
- batches of the champion's own distribution (5 seeds, 60 images) raise no alarm; a share under
  monitor.min_labelled_images is scored, marked too small and never alarmed on;
- a pushed batch's accuracy share is drawn outside the ranking, recorded once, and is what a pulled batch is scored on.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _labelling_model import easy_sample
from _monitoring_fixtures import batch_from
from PIL import Image

# The session's Prefect server, deployed with the webhook (test_deployments' fixtures, its `workspace` included).
from test_deployments import api, deployed, prefect_home, prefect_server, webhook, workspace  # noqa: F401

from detops.config import load_params
from detops.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
SETS = ("monitor.screenshot=false", "evaluate.batch_size=8")
SAME_SEEDS = (11, 12, 13, 14, 15)


def workspace_at(root: Path, *more: str) -> Workspace:
    return Workspace.at(root, load_params(root / "params.yaml", [*SETS, *more]))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, labelling_model: Path) -> Iterator[Path]:
    """The checkpoint that learned the easy sample (the session's labelling model), scored by the one scorer on a
    40-image test split of its distribution (seed 200), logged with that test mAP and registered as the champion,
    as `detops promote` packages a checkpoint."""
    import mlflow

    from detops.dataset.canonical import write_dataset
    from detops.dataset.images import probe_images
    from detops.evaluation.scorer import Scorer
    from detops.formats import read_source
    from detops.formats.source import to_canonical
    from detops.registry.client import connect
    from detops.registry.package import CHECKPOINT, ModelFiles, log_model
    from detops.tracking import configure

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("production")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    ws = workspace_at(root)
    raw = easy_sample(root / "data/raw/test", seed=200, num_images=40)
    source = read_source("coco", raw)
    dataset, _ = to_canonical(source, probe_images(source.image_paths()), ws.relative(raw))
    write_dataset(ws.split_json("test"), dataset)
    metrics = Scorer.of(ws, split="test").score(labelling_model).metrics
    client = connect(ws)
    run_id = client.create_run(configure(ws), run_name="train").info.run_id
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, value)
    client.set_terminated(run_id)
    model_id = log_model(ws, run_id, ModelFiles({CHECKPOINT: labelling_model}, CHECKPOINT))
    name = ws.params.mlflow.registered_model
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
    client.set_registered_model_alias(name, "champion", version.version)
    yield root
    mp.undo()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # MLflow takes None: leave no later test on this store


def darker(image: Image.Image) -> Image.Image:
    """A quarter of the brightness: the shapes' contrast the champion learned on is gone."""
    return Image.fromarray(np.round(np.asarray(image, dtype=np.float32) * 0.25).astype(np.uint8))


def land(root: Path, name: str, seed: int, images: int, change: Any = None) -> str:
    """A labelled batch of the easy generator's `seed` in the landing folder (labels kept), `change`d."""
    ws = workspace_at(root)
    source = easy_sample(root / "sources" / name, seed=seed, num_images=images)
    batch_from(source, ws.resolve(ws.params.monitor.landing), name, change)
    return name


def test_the_bootstrap_accumulates_as_the_scorer_scores() -> None:
    from detops.evaluation.bootstrap import bootstrap_map, per_image_matches, weighted_map
    from detops.evaluation.metrics import compute_coco

    rng = np.random.default_rng(0)
    images = [{"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64} for i in range(30)]
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for image in images:
        for _ in range(2):
            x, y = rng.uniform(0, 30, 2)
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": c, "bbox": [x, y, 25, 25],
                         "area": 625.0, "iscrowd": 0})
            dets.append({"image_id": image["id"], "category_id": c, "score": float(rng.uniform()),
                         "bbox": [x + rng.normal(0, 3), y + rng.normal(0, 3), 25, 25]})
            dets.append({"image_id": image["id"], "category_id": int(rng.integers(1, 4)),
                         "score": float(rng.uniform(0, 0.5)), "bbox": [x + 5, y + 5, 20, 20]})
    gt = {"images": images, "annotations": anns, "categories": [{"id": i, "name": str(i)} for i in range(1, 4)]}
    classes, recall_thresholds, n = per_image_matches(gt, dets)
    assert weighted_map(classes, recall_thresholds, np.ones(n, dtype=int)) == pytest.approx(
        compute_coco(gt, dets).summary["map"], abs=1e-6)
    # a resample drawn by hand: each drawn image a new one in a re-run of COCO
    counts = np.bincount(rng.integers(0, n, n), minlength=n)
    drawn: dict[str, list[Any]] = {"images": [], "annotations": [], "detections": []}
    for i, count in enumerate(counts):
        for _ in range(count):
            new = len(drawn["images"]) + 1
            drawn["images"].append({**images[i], "id": new})
            drawn["annotations"] += [{**a, "id": len(drawn["annotations"]) + k + 1, "image_id": new}
                                     for k, a in enumerate(a for a in anns if a["image_id"] == i + 1)]
            drawn["detections"] += [{**d, "image_id": new} for d in dets if d["image_id"] == i + 1]
    resampled = {"images": drawn["images"], "annotations": drawn["annotations"], "categories": gt["categories"]}
    assert weighted_map(classes, recall_thresholds, counts) == pytest.approx(
        compute_coco(resampled, drawn["detections"]).summary["map"], abs=1e-6)
    interval = bootstrap_map(gt, dets, resamples=200, seed=3)
    whole = compute_coco(gt, dets).summary["map"]
    assert interval is not None and whole is not None and interval.low < whole < interval.high
    assert interval == bootstrap_map(gt, dets, resamples=200, seed=3)  # seeded


def _events(api_url: str, name: str, since: float) -> list[dict[str, Any]]:
    """Events named `name` the server stored since `since` (epoch seconds), read with the Prefect client."""
    from datetime import datetime, timezone

    from prefect import get_client

    body = {"filter": {"event": {"name": [name]},
                       "occurred": {"since": datetime.fromtimestamp(since, timezone.utc).isoformat()}}, "limit": 50}
    with get_client(sync_client=True) as client:
        return list(client.request("POST", "/events/filter", json=body).json()["events"])


@pytest.mark.slow
def test_a_darker_labelled_batch_raises_the_alarm_and_starts_no_retraining(
    root: Path, request: pytest.FixtureRequest
) -> None:
    from prefect import get_client
    from prefect.events.worker import EventsWorker

    from detops.monitoring.accept import take_batch
    from detops.monitoring.production import RUN_NAME, TABLE, VERSION_TAG
    from detops.registry.client import connect
    from detops.tracking import configure
    from flows.deploy.spec import ACCURACY_EVENT
    from flows.events import emit_accuracy_event

    request.getfixturevalue("deployed")  # the notification automations, on the webhook
    api_url, hook = request.getfixturevalue("api"), request.getfixturevalue("webhook")
    ws = workspace_at(root)
    name = land(root, "dark-night", seed=21, images=60, change=darker)
    started = time.time()
    outcome = take_batch(ws, name)  # what retrain-on-drift runs first, then emits
    assert outcome.production == ws.reports / "production" / f"{name}.json"
    assert emit_accuracy_event(ws, outcome.production)
    EventsWorker.drain_all()

    report = json.loads(outcome.production.read_text(encoding="utf-8"))
    assert {"version", "batch", "map", "map_50", "interval", "images", "too_small"} <= set(report)
    assert report["batch"] == name and report["images"] == 60 and not report["too_small"]
    low, high = report["interval"]
    assert low <= report["map"] <= high < report["test_map"] - ws.params.monitor.max_accuracy_drop, report
    assert report["alarm"] and set(report["models"][0]["ap"]) == {"circle", "square", "triangle"}

    client = connect(ws)
    [run] = client.search_runs([configure(ws)], filter_string=f"tags.`{VERSION_TAG}` = '{report['version']}'")
    assert run.info.run_name == RUN_NAME
    assert run.data.metrics["production/map"] == pytest.approx(report["map"])
    assert run.data.metrics["production/map_high"] == pytest.approx(high)
    assert high < run.data.metrics["test/map"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "production/map")] == [0]
    assert TABLE in {a.path for a in client.list_artifacts(run.info.run_id)}

    from _waiting import wait_until

    [event] = wait_until(lambda: _events(api_url, ACCURACY_EVENT, started), 30, "the accuracy event")
    assert event["payload"]["batch"] == name and event["payload"]["version"] == report["version"]
    assert event["payload"]["interval_high"] == pytest.approx(high)
    wait_until(lambda: [t for t in hook.texts() if "accuracy dropped" in t and name in t], 60,
               "the accuracy notification")
    time.sleep(3)  # an automation that started a run would have done so by now
    with get_client(sync_client=True) as prefect:
        later = [r for r in prefect.read_flow_runs() if r.created and r.created.timestamp() >= started]
    # (the scheduler's runs of retrain-scheduled's cron are auto_scheduled, and may be made at any time)
    started_runs = [r for r in later if not r.auto_scheduled]
    assert not [r for r in started_runs if r.flow_id and prefect_flow_name(r.flow_id) == "retrain"], later


def prefect_flow_name(flow_id: Any) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return str(client.read_flow(flow_id).name)


def test_batches_of_the_champions_own_distribution_raise_no_alarm(root: Path) -> None:
    """5 seeds of 60 images: the interval covers the test mAP's neighbourhood each time."""
    from detops.monitoring.batches import find_batch, read_batch
    from detops.monitoring.production import score_batch

    ws = workspace_at(root)
    for seed in SAME_SEEDS:
        name = land(root, f"day-{seed}", seed=seed, images=60)
        path, notes = score_batch(ws, read_batch(ws, find_batch(ws, name)))
        assert path is not None, notes
        report = json.loads(path.read_text(encoding="utf-8"))
        assert report["alarm"] == [] and not report["too_small"], report
        assert report["interval"][1] >= report["test_map"] - ws.params.monitor.max_accuracy_drop, report


def test_a_share_too_small_is_scored_and_never_alarmed_on(root: Path) -> None:
    from detops.monitoring.batches import find_batch, read_batch
    from detops.monitoring.production import score_batch

    ws = workspace_at(root)
    name = land(root, "dark-few", seed=31, images=12, change=darker)
    path, _ = score_batch(ws, read_batch(ws, find_batch(ws, name)))
    assert path is not None
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["too_small"] and report["images"] == 12 and report["alarm"] == []
    assert report["map"] is not None and report["map"] < report["test_map"]


def test_the_accuracy_share_is_drawn_outside_the_ranking_and_is_what_a_pulled_batch_is_scored_on(
    root: Path
) -> None:
    from detops.labeling.push import accuracy_share
    from detops.labeling.state import RoundTrip, save_state
    from detops.monitoring.batches import find_batch, ledger, read_batch
    from detops.monitoring.production import share_of

    ws = workspace_at(root)
    name = land(root, "raw-40", seed=41, images=40)
    data = read_batch(ws, find_batch(ws, name))
    images = sorted(data.dataset["images"], key=lambda im: str(im["file_name"]))
    share = accuracy_share(ws, name, data.dataset, images)
    assert len(share) == 8 and share == accuracy_share(ws, name, data.dataset, images)  # 20 %, seeded by the name
    assert share != accuracy_share(ws, "raw-41", data.dataset, images)
    save_state(ws, RoundTrip(name, 1, {str(im["file_name"]): i for i, im in enumerate(images)},
                             accuracy_share=share[:5]))
    assert accuracy_share(ws, name, data.dataset, images) == share[:5]  # recorded once, read back
    # a pulled batch: its ledger entry names where it came from, and only the share is scored
    ledger(ws).record("raw-40-labelled", {"labelled_from": name, "labelled": True})
    shutil.copytree(find_batch(ws, name).path, ws.resolve(ws.params.monitor.landing) / "raw-40-labelled")
    pulled = read_batch(ws, find_batch(ws, "raw-40-labelled"))
    gt, what = share_of(ws, pulled)
    assert gt is not None and sorted(str(im["file_name"]) for im in gt["images"]) == sorted(share[:5]), what


def test_the_gate_scores_the_candidate_on_the_production_shares_it_did_not_train_on(
    root: Path, labelling_model: Path
) -> None:
    """An accepted batch lists its share; import marks those images; the candidate is scored on the marked images of
    its val and test splits only, never on those it trained on."""
    from detops.dataset.canonical import read_dataset, subset
    from detops.evaluation.scorer import Scorer
    from detops.monitoring.accept import take_batch
    from detops.monitoring.production import candidate_on_shares, shares_text
    from detops.monitoring.share import SHARE_FILE, SHARE_KEY
    from detops.steps.import_ import with_accepted_batches

    ws = workspace_at(root)
    name = land(root, "day-accepted", seed=61, images=32)
    outcome = take_batch(ws, name)
    assert outcome.accepted is not None
    listed = (outcome.accepted / SHARE_FILE).read_text(encoding="utf-8").split()
    assert sorted(listed) == sorted(outcome.images) and len(listed) > 20  # labelled on landing: the whole batch

    main = read_dataset(ws.split_json("test"))
    merged = with_accepted_batches(ws, main, [])
    mine = [im for im in merged["images"] if im.get("batch") == name]  # another test's batch may be accepted too
    marked = [im for im in mine if im.get(SHARE_KEY)]
    assert len(mine) == len(marked) == len(listed)
    assert not [im for im in merged["images"] if im.get(SHARE_KEY) and not im.get("batch")]  # the dataset's own

    ids = [im["id"] for im in marked]
    trained, val, test = ids[: len(ids) // 2], ids[len(ids) // 2: 3 * len(ids) // 4], ids[3 * len(ids) // 4:]
    assert trained and val and test
    others = [im["id"] for im in merged["images"] if not im.get(SHARE_KEY)]
    shares = candidate_on_shares(ws, labelling_model, {"val": subset(merged, val),
                                                       "test": subset(merged, [*test, *others])})
    assert shares is not None and shares["images"] == len(val) + len(test) and shares["batches"] == [name]
    assert shares["splits"] == ["test", "val"] and shares["too_small"]  # under monitor.min_labelled_images
    expected = Scorer.of(ws, gt=subset(merged, [*val, *test]), split="test").score(labelling_model)
    assert shares["map"] == pytest.approx(expected.result.summary["map"])
    assert shares["interval"][0] <= shares["map"] <= shares["interval"][1]
    assert f"on {len(val) + len(test)} image(s) of 1 batch(es)" in shares_text(shares)
    assert candidate_on_shares(ws, labelling_model, {"test": subset(merged, others)}) is None
